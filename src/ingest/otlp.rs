//! OTLP profiles (`opentelemetry.proto.profiles.v1development`, the schema of the
//! `opentelemetry-proto` 0.33 crate) → pprof profiles with series labels, the way Pyroscope 2
//! converts them (`pkg/ingester/otlp`): one pprof per OTLP profile (one sample type each) and
//! per `service.name` of its samples. The caller encodes each result and ingests it as a pushed
//! pprof, so every limit, the WAL record and its replay are those of push.v1.
//!
//! Owns: the bounds of a request's wire form (dictionary table sizes, checked before it is
//! decoded), the index checks into the shared dictionary, the label rules of OTLP attributes,
//! and the profile-type naming (`process_cpu` for `samples:count` with a `cpu:nanoseconds`
//! period, `off_cpu`, else the period type's name). Transport-free: `api::otlp` owns HTTP/gRPC.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::profiles::v1development as otlp;

use crate::model::{LABEL_DELTA, LABEL_NAME, LABEL_SERVICE_NAME, LabelError, Labels, valid_label_name};
use crate::pprof::DecodeLimits;
use crate::proto::google::v1 as gpb;

use super::UNKNOWN_SERVICE;

/// Label Pyroscope sets on every series that came in over OTLP.
pub const LABEL_OTEL: &str = "__otel__";
/// The OpenTelemetry resource (and sample) attribute that names the service.
const SERVICE_NAME_ATTRIBUTE: &str = "service.name";
/// What Pyroscope appends to `unknown_service` when only the executable is known.
const EXECUTABLE_NAME_ATTRIBUTE: &str = "process.executable.name";
/// Mapping attribute carrying the GNU build id.
const BUILD_ID_ATTRIBUTE: &str = "process.executable.build_id.gnu";
/// Duration given to a profile that states none (Pyroscope's default).
const DEFAULT_DURATION_NANOS: i64 = 10_000_000_000;

/// Why an OTLP request (or one profile of it) cannot be converted. Every case is the sender's.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("not an OTLP ExportProfilesServiceRequest: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("not an OTLP ExportProfilesServiceRequest: malformed {0}")]
    Malformed(&'static str),
    #[error("the dictionary has {count} or more {what}, more than the limit of {limit} ({setting})")]
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
        setting: &'static str,
    },
    #[error("the request has no dictionary (ProfilesDictionary is required)")]
    NoDictionary,
    #[error("the request has no profiles")]
    NoProfiles,
    #[error("{at}: {what} index {index} is out of range (the dictionary's {table} has {len} entries)")]
    Index {
        at: String,
        what: &'static str,
        table: &'static str,
        index: i64,
        len: usize,
    },
    #[error("{at}: {reason}")]
    Invalid { at: String, reason: String },
    #[error("{at}: invalid labels: {source}")]
    Labels {
        at: String,
        #[source]
        source: LabelError,
    },
}

impl crate::error::Classify for OtlpError {
    /// The same request never converts: a 400 / `InvalidArgument`.
    fn class(&self) -> crate::error::ErrorClass {
        crate::error::ErrorClass::Client
    }
}

/// One converted profile: where it was in the request, its series labels, the pprof.
#[derive(Debug, Clone)]
pub struct Converted {
    pub at: String,
    pub labels: Labels,
    pub profile: gpb::Profile,
}

/// Decodes a protobuf `ExportProfilesServiceRequest` after checking, on the wire, that its
/// dictionary tables stay within `limits` (prost would otherwise allocate every entry first:
/// an empty `Location` is 2 bytes on the wire and ~80 in memory).
pub fn decode_request(body: &[u8], limits: &DecodeLimits) -> Result<ExportProfilesServiceRequest, OtlpError> {
    check_dictionary_sizes(body, limits)?;
    Ok(prost::Message::decode(body)?)
}

/// Counts the dictionary's table entries (field 2 of the request, fields 1-7 of
/// `ProfilesDictionary`) against the decode limits without decoding them.
fn check_dictionary_sizes(body: &[u8], limits: &DecodeLimits) -> Result<(), OtlpError> {
    // Tables: (field, what, limit, setting).
    let tables: [(u64, &'static str, usize, &'static str); 7] = [
        (1, "mappings", limits.max_mappings, "limits.max_mappings"),
        (2, "locations", limits.max_locations, "limits.max_locations"),
        (3, "functions", limits.max_functions, "limits.max_functions"),
        (4, "links", limits.max_samples, "limits.max_samples"),
        (5, "strings", limits.max_strings, "limits.max_strings"),
        (6, "attributes", limits.max_strings, "limits.max_strings"),
        (7, "stacks", limits.max_samples, "limits.max_samples"),
    ];
    let mut counts = [0usize; 8];
    let mut check = |field: u64| -> Result<(), OtlpError> {
        if let Some(&(_, what, limit, setting)) = tables.iter().find(|(number, ..)| *number == field) {
            let count = &mut counts[field as usize];
            *count += 1;
            if *count > limit {
                return Err(OtlpError::TooMany {
                    what,
                    count: *count,
                    limit,
                    setting,
                });
            }
        }
        Ok(())
    };
    for_each_field(body, |field, value| {
        if field == 2
            && let Some(dictionary) = value
        {
            for_each_field(dictionary, |field, _| check(field))?;
        }
        Ok(())
    })
}

/// Calls `visit` with each top-level field number of a protobuf message and, for
/// length-delimited fields, their bytes.
fn for_each_field(
    mut buf: &[u8],
    mut visit: impl FnMut(u64, Option<&[u8]>) -> Result<(), OtlpError>,
) -> Result<(), OtlpError> {
    while !buf.is_empty() {
        let key = read_varint(&mut buf).ok_or(OtlpError::Malformed("field key"))?;
        let field = key >> 3;
        match key & 7 {
            0 => {
                read_varint(&mut buf).ok_or(OtlpError::Malformed("varint"))?;
                visit(field, None)?;
            }
            1 | 5 => {
                let width = if key & 7 == 1 { 8 } else { 4 };
                buf = buf.get(width..).ok_or(OtlpError::Malformed("fixed-width field"))?;
                visit(field, None)?;
            }
            2 => {
                let len = read_varint(&mut buf).ok_or(OtlpError::Malformed("length prefix"))?;
                let len = usize::try_from(len).map_err(|_| OtlpError::Malformed("length prefix"))?;
                if len > buf.len() {
                    return Err(OtlpError::Malformed("length prefix past the end of the body"));
                }
                let (value, rest) = buf.split_at(len);
                buf = rest;
                visit(field, Some(value))?;
            }
            _ => return Err(OtlpError::Malformed("wire type")),
        }
    }
    Ok(())
}

fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Converts every profile of `request`. The first profile that does not convert fails the whole
/// request (nothing of it is stored, so a fixed retry stores nothing twice). `now_nanos` is the
/// time given to profiles that state none.
pub fn convert_request(
    request: &ExportProfilesServiceRequest,
    limits: &DecodeLimits,
    now_nanos: i64,
) -> Result<Vec<Converted>, OtlpError> {
    let dictionary = request.dictionary.as_ref().ok_or(OtlpError::NoDictionary)?;
    // The wire check of `decode_request`, again on the decoded tables: a request decoded by
    // tonic (gRPC) did not go through it.
    let tables = [
        (
            "mappings",
            dictionary.mapping_table.len(),
            limits.max_mappings,
            "limits.max_mappings",
        ),
        (
            "locations",
            dictionary.location_table.len(),
            limits.max_locations,
            "limits.max_locations",
        ),
        (
            "functions",
            dictionary.function_table.len(),
            limits.max_functions,
            "limits.max_functions",
        ),
        (
            "links",
            dictionary.link_table.len(),
            limits.max_samples,
            "limits.max_samples",
        ),
        (
            "strings",
            dictionary.string_table.len(),
            limits.max_strings,
            "limits.max_strings",
        ),
        (
            "attributes",
            dictionary.attribute_table.len(),
            limits.max_strings,
            "limits.max_strings",
        ),
        (
            "stacks",
            dictionary.stack_table.len(),
            limits.max_samples,
            "limits.max_samples",
        ),
    ];
    for (what, count, limit, setting) in tables {
        if count > limit {
            return Err(OtlpError::TooMany {
                what,
                count,
                limit,
                setting,
            });
        }
    }
    let mut out = Vec::new();
    let mut profiles = 0usize;
    for (resource_index, resource_profiles) in request.resource_profiles.iter().enumerate() {
        let resource_attributes = resolve_attributes(
            resource_profiles
                .resource
                .as_ref()
                .map_or(&[], |resource| &resource.attributes),
            dictionary,
            &format!("resource_profiles[{resource_index}].resource"),
        )?;
        let resource_service = service_name_of(&resource_attributes);
        for (scope_index, scope_profiles) in resource_profiles.scope_profiles.iter().enumerate() {
            let scope_attributes = resolve_attributes(
                scope_profiles.scope.as_ref().map_or(&[], |scope| &scope.attributes),
                dictionary,
                &format!("resource_profiles[{resource_index}].scope_profiles[{scope_index}].scope"),
            )?;
            for (profile_index, profile) in scope_profiles.profiles.iter().enumerate() {
                profiles += 1;
                let at = format!(
                    "resource_profiles[{resource_index}].scope_profiles[{scope_index}].profiles[{profile_index}]"
                );
                let converter = Converter {
                    at: &at,
                    dictionary,
                    limits,
                };
                for (sample_service, profile_type_name, pprof) in converter.convert(profile, now_nanos)? {
                    let service = sample_service.unwrap_or_else(|| resource_service.clone());
                    let labels = series_labels(&profile_type_name, &resource_attributes, &scope_attributes, &service)
                        .map_err(|source| OtlpError::Labels { at: at.clone(), source })?;
                    out.push(Converted {
                        at: at.clone(),
                        labels,
                        profile: pprof,
                    });
                }
            }
        }
    }
    if profiles == 0 {
        return Err(OtlpError::NoProfiles);
    }
    Ok(out)
}

/// `service.name` of a resource; else `unknown_service`, with `:<process.executable.name>` when
/// that is known (Pyroscope's and OpenTelemetry's rule).
fn service_name_of(attributes: &[(&str, &str)]) -> String {
    let mut fallback = UNKNOWN_SERVICE.to_string();
    for &(key, value) in attributes {
        if key == SERVICE_NAME_ATTRIBUTE {
            return value.to_string();
        }
        if key == EXECUTABLE_NAME_ATTRIBUTE {
            fallback = format!("{UNKNOWN_SERVICE}:{value}");
        }
    }
    fallback
}

/// The resource's or scope's attributes with a non-empty string value, as (key, value). In
/// profiles their key and value may be references into the dictionary's string table
/// (`key_strindex`, `string_value_strindex`: what the collector's pdata sends), checked here.
fn resolve_attributes<'a>(
    attributes: &'a [KeyValue],
    dictionary: &'a otlp::ProfilesDictionary,
    at: &str,
) -> Result<Vec<(&'a str, &'a str)>, OtlpError> {
    let mut out = Vec::with_capacity(attributes.len());
    for attribute in attributes {
        let key = if attribute.key.is_empty() && attribute.key_strindex != 0 {
            table_string(&dictionary.string_table, attribute.key_strindex, at, "attribute key")?
        } else {
            attribute.key.as_str()
        };
        if let Some(value) = string_value(attribute.value.as_ref(), &dictionary.string_table, at)? {
            out.push((key, value));
        }
    }
    Ok(out)
}

fn table_string<'a>(table: &'a [String], index: i32, at: &str, what: &'static str) -> Result<&'a str, OtlpError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .map(String::as_str)
        .ok_or_else(|| OtlpError::Index {
            at: at.to_string(),
            what,
            table: "string_table",
            index: i64::from(index),
            len: table.len(),
        })
}

/// A non-empty string value (inline or a string-table reference); other kinds are not labels
/// (as in Pyroscope).
fn string_value<'a>(
    value: Option<&'a AnyValue>,
    strings: &'a [String],
    at: &str,
) -> Result<Option<&'a str>, OtlpError> {
    let value = match value.and_then(|value| value.value.as_ref()) {
        Some(any_value::Value::StringValue(value)) => value.as_str(),
        Some(any_value::Value::StringValueStrindex(index)) => table_string(strings, *index, at, "attribute value")?,
        _ => return Ok(None),
    };
    Ok((!value.is_empty()).then_some(value))
}

/// A label name Pyrite stores: characters outside `[a-zA-Z0-9_.]` become `_`, a leading digit
/// gets a `_` in front (`k8s.pod-name` → `k8s.pod_name`).
pub fn sanitize_label_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    debug_assert!(out.is_empty() || valid_label_name(&out));
    out
}

/// `__delta__="false"` (OTLP profiles are never cumulative), `__otel__="true"`, `__name__`, the
/// resource's then the scope's string attributes (a name seen first wins; names starting with
/// `__` are Pyrite's own and dropped), and `service_name`.
fn series_labels(
    name: &str,
    resource: &[(&str, &str)],
    scope: &[(&str, &str)],
    service: &str,
) -> Result<Labels, LabelError> {
    let mut pairs: Vec<(String, String)> = vec![
        (LABEL_DELTA.to_string(), "false".to_string()),
        (LABEL_OTEL.to_string(), "true".to_string()),
        (LABEL_NAME.to_string(), name.to_string()),
        (LABEL_SERVICE_NAME.to_string(), service.to_string()),
    ];
    for &(key, value) in resource.iter().chain(scope) {
        let key = sanitize_label_name(key);
        if key.is_empty() || key.starts_with("__") || pairs.iter().any(|(seen, _)| *seen == key) {
            continue;
        }
        pairs.push((key, value.to_string()));
    }
    Labels::new(pairs)
}

/// How a sample's values become the pprof's one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueRule {
    /// As is (one value).
    Keep,
    /// `samples:count` with a `cpu:nanoseconds` period: count × period, stored as `cpu:nanoseconds`.
    SamplesToNanos(i64),
    /// Off-CPU: every value summed.
    Sum,
}

/// Converts the profiles of one request against its shared dictionary.
struct Converter<'a> {
    at: &'a str,
    dictionary: &'a otlp::ProfilesDictionary,
    limits: &'a DecodeLimits,
}

impl<'a> Converter<'a> {
    fn index<'t, T>(
        &self,
        table: &'t [T],
        index: i32,
        what: &'static str,
        name: &'static str,
    ) -> Result<&'t T, OtlpError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| table.get(i))
            .ok_or_else(|| OtlpError::Index {
                at: self.at.to_string(),
                what,
                table: name,
                index: i64::from(index),
                len: table.len(),
            })
    }

    fn string(&self, index: i32, what: &'static str) -> Result<&'a str, OtlpError> {
        // An empty table still has index 0, the empty string, by the format's convention.
        if index == 0 && self.dictionary.string_table.is_empty() {
            return Ok("");
        }
        Ok(self
            .index(&self.dictionary.string_table, index, what, "string_table")?
            .as_str())
    }

    fn invalid(&self, reason: impl Into<String>) -> OtlpError {
        OtlpError::Invalid {
            at: self.at.to_string(),
            reason: reason.into(),
        }
    }

    /// The string value of the attribute named `key` among `indices`.
    fn attribute(&self, indices: &[i32], key: &str) -> Result<Option<&'a str>, OtlpError> {
        for &index in indices {
            let attribute = self.index(&self.dictionary.attribute_table, index, "attribute", "attribute_table")?;
            if self.string(attribute.key_strindex, "attribute key")? == key {
                return string_value(attribute.value.as_ref(), &self.dictionary.string_table, self.at);
            }
        }
        Ok(None)
    }

    /// One pprof per `service.name` found among the samples (`None`: the resource's), with the
    /// profile's `__name__`.
    #[allow(clippy::type_complexity)]
    fn convert(
        &self,
        profile: &otlp::Profile,
        now_nanos: i64,
    ) -> Result<Vec<(Option<String>, String, gpb::Profile)>, OtlpError> {
        let sample_type = profile
            .sample_type
            .as_ref()
            .ok_or_else(|| self.invalid("sample_type is missing"))?;
        let type_name = self.string(sample_type.type_strindex, "sample type")?;
        let unit = self.string(sample_type.unit_strindex, "sample unit")?;
        let (period_type, period_unit) = match &profile.period_type {
            Some(period_type) if profile.period != 0 => (
                self.string(period_type.type_strindex, "period type")?,
                self.string(period_type.unit_strindex, "period unit")?,
            ),
            _ => ("", ""),
        };
        if profile.samples.len() > self.limits.max_samples {
            return Err(self.invalid(format!(
                "{} samples, more than limits.max_samples ({})",
                profile.samples.len(),
                self.limits.max_samples
            )));
        }
        // Pyroscope's naming (pkg/ingester/otlp/convert.go).
        let (stored_type, stored_unit, rule, name) = match (type_name, unit, period_type, period_unit) {
            ("samples", "count", "cpu", "nanoseconds") => (
                "cpu",
                "nanoseconds",
                ValueRule::SamplesToNanos(profile.period),
                Some("process_cpu"),
            ),
            ("off_cpu", "nanoseconds", "", "") => (type_name, unit, ValueRule::Sum, Some("off_cpu")),
            _ => (
                type_name,
                unit,
                ValueRule::Keep,
                (!period_type.is_empty()).then_some(period_type),
            ),
        };

        let mut builders: Vec<(Option<String>, Builder)> = Vec::new();
        for (sample_index, sample) in profile.samples.iter().enumerate() {
            let service = self
                .attribute(&sample.attribute_indices, SERVICE_NAME_ATTRIBUTE)?
                .map(str::to_string);
            let position = match builders.iter().position(|(seen, _)| *seen == service) {
                Some(position) => position,
                None => {
                    let mut builder = Builder::new(profile, now_nanos);
                    builder.set_types(stored_type, stored_unit, period_type, period_unit);
                    builders.push((service, builder));
                    builders.len() - 1
                }
            };
            self.sample(&mut builders[position].1, sample, sample_index, rule)?;
        }
        Ok(builders
            .into_iter()
            .map(|(service, builder)| {
                let profile = builder.finish();
                // A type without a period type has no name in Pyroscope's rule: the push path's.
                let name = name.map_or_else(|| super::metric_name(&profile), str::to_string);
                (service, name, profile)
            })
            .collect())
    }

    fn sample(
        &self,
        builder: &mut Builder,
        sample: &otlp::Sample,
        index: usize,
        rule: ValueRule,
    ) -> Result<(), OtlpError> {
        let mut values = if sample.values.is_empty() {
            // No values: each timestamp is one event (the format's rule).
            vec![i64::try_from(sample.timestamps_unix_nano.len()).unwrap_or(i64::MAX)]
        } else {
            sample.values.clone()
        };
        if sample.values.is_empty() && sample.timestamps_unix_nano.is_empty() {
            return Err(self.invalid(format!("sample {index} has neither values nor timestamps")));
        }
        let value = match rule {
            ValueRule::Sum => values.iter().fold(0i64, |sum, value| sum.saturating_add(*value)),
            ValueRule::Keep | ValueRule::SamplesToNanos(_) if values.len() != 1 => {
                return Err(self.invalid(format!(
                    "sample {index} has {} values; a profile has one sample type, so one value",
                    values.len()
                )));
            }
            ValueRule::Keep => values[0],
            ValueRule::SamplesToNanos(period) => values[0].saturating_mul(period),
        };
        values.clear();

        let stack = self.index(&self.dictionary.stack_table, sample.stack_index, "stack", "stack_table")?;
        if stack.location_indices.len() > self.limits.max_locations_per_sample {
            return Err(self.invalid(format!(
                "sample {index} has {} locations, more than limits.max_locations_per_sample ({})",
                stack.location_indices.len(),
                self.limits.max_locations_per_sample
            )));
        }
        let mut location_ids = Vec::with_capacity(stack.location_indices.len());
        for &location_index in &stack.location_indices {
            location_ids.push(self.location(builder, location_index)?);
        }

        let mut labels = Vec::new();
        for &attribute_index in &sample.attribute_indices {
            let attribute = self.index(
                &self.dictionary.attribute_table,
                attribute_index,
                "attribute",
                "attribute_table",
            )?;
            let key = self.string(attribute.key_strindex, "attribute key")?;
            if key == SERVICE_NAME_ATTRIBUTE {
                continue;
            }
            if let Some(value) = string_value(attribute.value.as_ref(), &self.dictionary.string_table, self.at)? {
                labels.push(gpb::Label {
                    key: builder.string(key),
                    str: builder.string(value),
                    ..Default::default()
                });
            }
        }
        // Index 0 of the link table is "no link" by the format's convention.
        if sample.link_index != 0 {
            let link = self.index(&self.dictionary.link_table, sample.link_index, "link", "link_table")?;
            labels.push(gpb::Label {
                key: builder.string("span_id"),
                str: builder.string(&hex(&link.span_id)),
                ..Default::default()
            });
            if link.trace_id.len() == 16 {
                labels.push(gpb::Label {
                    key: builder.string("trace_id"),
                    str: builder.string(&hex(&link.trace_id)),
                    ..Default::default()
                });
            }
        }
        builder.profile.sample.push(gpb::Sample {
            location_id: location_ids,
            value: vec![value],
            label: labels,
        });
        Ok(())
    }

    /// The pprof location id of dictionary location `index`, converting it (and its mapping
    /// and functions) the first time. A location without lines is kept as its mapping and
    /// address (an unsymbolized frame).
    fn location(&self, builder: &mut Builder, index: i32) -> Result<u64, OtlpError> {
        if let Some(&id) = builder.locations.get(&index) {
            return Ok(id);
        }
        let location = self.index(&self.dictionary.location_table, index, "location", "location_table")?;
        let mapping_id = self.mapping(builder, location.mapping_index)?;
        let mut lines = Vec::with_capacity(location.lines.len());
        for line in &location.lines {
            lines.push(gpb::Line {
                function_id: self.function(builder, line.function_index)?,
                line: line.line,
                column: line.column,
            });
        }
        let id = builder.profile.location.len() as u64 + 1;
        builder.profile.location.push(gpb::Location {
            id,
            mapping_id,
            address: location.address,
            line: lines,
            is_folded: false,
        });
        builder.locations.insert(index, id);
        Ok(id)
    }

    /// The pprof mapping id of dictionary mapping `index`; 0 (none) for index 0 of an empty
    /// table or for the table's all-zero first entry (the format's "no mapping").
    fn mapping(&self, builder: &mut Builder, index: i32) -> Result<u64, OtlpError> {
        if index == 0 && self.dictionary.mapping_table.is_empty() {
            return Ok(0);
        }
        if let Some(&id) = builder.mappings.get(&index) {
            return Ok(id);
        }
        let mapping = self.index(&self.dictionary.mapping_table, index, "mapping", "mapping_table")?;
        if index == 0 && *mapping == otlp::Mapping::default() {
            return Ok(0);
        }
        let filename = self.string(mapping.filename_strindex, "mapping file name")?;
        let build_id = self
            .attribute(&mapping.attribute_indices, BUILD_ID_ATTRIBUTE)?
            .unwrap_or("");
        let id = builder.profile.mapping.len() as u64 + 1;
        let (filename, build_id) = (builder.string(filename), builder.string(build_id));
        builder.profile.mapping.push(gpb::Mapping {
            id,
            memory_start: mapping.memory_start,
            memory_limit: mapping.memory_limit,
            file_offset: mapping.file_offset,
            filename,
            build_id,
            ..Default::default()
        });
        builder.mappings.insert(index, id);
        Ok(id)
    }

    fn function(&self, builder: &mut Builder, index: i32) -> Result<u64, OtlpError> {
        if let Some(&id) = builder.functions.get(&index) {
            return Ok(id);
        }
        let function = self.index(&self.dictionary.function_table, index, "function", "function_table")?;
        let name = self.string(function.name_strindex, "function name")?;
        let system_name = self.string(function.system_name_strindex, "function system name")?;
        let filename = self.string(function.filename_strindex, "function file name")?;
        let id = builder.profile.function.len() as u64 + 1;
        let (name, system_name, filename) = (
            builder.string(name),
            builder.string(system_name),
            builder.string(filename),
        );
        builder.profile.function.push(gpb::Function {
            id,
            name,
            system_name,
            filename,
            start_line: function.start_line,
        });
        builder.functions.insert(index, id);
        Ok(id)
    }
}

/// A pprof under construction: only what its samples reference is copied out of the shared
/// dictionary, so a large dictionary shared by many profiles is not copied per profile.
struct Builder {
    profile: gpb::Profile,
    strings: HashMap<String, i64>,
    locations: HashMap<i32, u64>,
    mappings: HashMap<i32, u64>,
    functions: HashMap<i32, u64>,
}

impl Builder {
    fn new(source: &otlp::Profile, now_nanos: i64) -> Self {
        let time_nanos = i64::try_from(source.time_unix_nano).unwrap_or(i64::MAX);
        let duration_nanos = i64::try_from(source.duration_nano).unwrap_or(i64::MAX);
        let mut builder = Self {
            profile: gpb::Profile {
                time_nanos: if time_nanos == 0 { now_nanos } else { time_nanos },
                duration_nanos: if duration_nanos == 0 {
                    DEFAULT_DURATION_NANOS
                } else {
                    duration_nanos
                },
                period: source.period,
                ..Default::default()
            },
            strings: HashMap::new(),
            locations: HashMap::new(),
            mappings: HashMap::new(),
            functions: HashMap::new(),
        };
        builder.string("");
        builder
    }

    fn set_types(&mut self, sample_type: &str, unit: &str, period_type: &str, period_unit: &str) {
        let value_type = gpb::ValueType {
            r#type: self.string(sample_type),
            unit: self.string(unit),
        };
        self.profile.sample_type = vec![value_type];
        self.profile.default_sample_type = value_type.r#type;
        if !period_type.is_empty() || !period_unit.is_empty() {
            self.profile.period_type = Some(gpb::ValueType {
                r#type: self.string(period_type),
                unit: self.string(period_unit),
            });
        }
    }

    fn string(&mut self, value: &str) -> i64 {
        if let Some(&index) = self.strings.get(value) {
            return index;
        }
        let index = self.profile.string_table.len() as i64;
        self.profile.string_table.push(value.to_string());
        self.strings.insert(value.to_string(), index);
        index
    }

    fn finish(self) -> gpb::Profile {
        self.profile
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}
