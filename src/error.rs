//! What kind of failure an error is, said by the module that owns the error. Every module's
//! error type implements [`Classify`]; the API turns a class into a connect code and an HTTP
//! status in one place (`api::error`), so no module below the API knows about either.

/// The kinds of failure a caller acts on differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The request is wrong and stays wrong when sent again (a bad window, selector, profile).
    Client,
    /// The request names no tenant or credentials where they are required.
    Unauthenticated,
    /// Over a limit for now (a rate, a count): the same request may succeed later.
    Limited,
    /// What the request names does not exist (an ad-hoc profile id): asking again will not
    /// find it.
    NotFound,
    /// Lost a race with another writer: read again, then retry.
    Conflict,
    /// Something the server depends on (object storage, the disk) is failing: retry later.
    Unavailable,
    /// The work ran out of time.
    Deadline,
    /// A fault of the server or damaged data: retrying will not help.
    Internal,
}

impl ErrorClass {
    /// Whether the server, not the client, is at fault (worth an error log line).
    pub fn is_server_fault(self) -> bool {
        matches!(self, Self::Unavailable | Self::Internal)
    }
}

/// An error that knows its [`ErrorClass`].
pub trait Classify: std::error::Error {
    fn class(&self) -> ErrorClass;
}
