//! The one place an error class becomes a connect code, and so an HTTP status: every handler
//! answers a module's error through [`code`] (via `From<E: Classify> for ConnectError`).
//! Routes with statuses of their own (the legacy `/ingest`'s 413 and 422, Pyroscope's) set them
//! on top with [`ConnectError::with_status`].

use super::connect::{Code, ConnectError};
use crate::error::{Classify, ErrorClass};

/// The connect code of a class; its HTTP status is [`Code::http_status`].
pub fn code(class: ErrorClass) -> Code {
    match class {
        ErrorClass::Client => Code::InvalidArgument,
        ErrorClass::Unauthenticated => Code::Unauthenticated,
        ErrorClass::Limited => Code::ResourceExhausted,
        ErrorClass::NotFound => Code::NotFound,
        ErrorClass::Conflict => Code::Aborted,
        ErrorClass::Unavailable => Code::Unavailable,
        ErrorClass::Deadline => Code::DeadlineExceeded,
        ErrorClass::Internal => Code::Internal,
    }
}

/// The answer to `err`; server faults are logged here, once, so handlers need not.
pub fn answer<E: Classify>(err: &E) -> ConnectError {
    let class = err.class();
    if class.is_server_fault() {
        tracing::error!(error = %err, ?class, "request failed");
    }
    ConnectError::new(code(class), err.to_string())
}

impl<E: Classify> From<E> for ConnectError {
    fn from(err: E) -> Self {
        answer(&err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_its_status() {
        let want = [
            (ErrorClass::Client, 400, "invalid_argument"),
            (ErrorClass::Unauthenticated, 401, "unauthenticated"),
            (ErrorClass::Limited, 429, "resource_exhausted"),
            (ErrorClass::NotFound, 404, "not_found"),
            (ErrorClass::Conflict, 409, "aborted"),
            (ErrorClass::Unavailable, 503, "unavailable"),
            (ErrorClass::Deadline, 504, "deadline_exceeded"),
            (ErrorClass::Internal, 500, "internal"),
        ];
        for (class, status, name) in want {
            assert_eq!(code(class).http_status().as_u16(), status, "{class:?}");
            assert_eq!(code(class).as_str(), name, "{class:?}");
        }
    }

    #[test]
    fn module_errors_answer_by_their_class() {
        let err = crate::query::QueryError::EmptyWindow {
            from_ms: 5,
            until_ms: 5,
        };
        let answered = ConnectError::from(err);
        assert_eq!(answered.code, Code::InvalidArgument);
        assert!(answered.message.contains("from (5)"), "{}", answered.message);

        let storage = crate::storage::StorageError::ObjectStore(object_store::Error::Generic {
            store: "test",
            source: "connection refused".into(),
        });
        let err = crate::query::QueryError::Block(crate::block::BlockError::Storage(storage));
        assert_eq!(ConnectError::from(err).code, Code::Unavailable);

        let err = crate::query::QueryError::Block(crate::block::BlockError::Corrupt {
            key: "t/1/b/data".into(),
            reason: "truncated".into(),
        });
        assert_eq!(ConnectError::from(err).http_status().as_u16(), 500);

        let err = crate::settings::SettingsError::Outdated {
            name: "x".into(),
            stored_ms: 2,
            given_ms: 1,
        };
        assert_eq!(ConnectError::from(err).code, Code::Aborted);
    }
}
