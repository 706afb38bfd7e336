use std::io::Write;

use super::*;

/// A small valid profile: two sample types, two stacks, one mapping, labels.
fn profile() -> Profile {
    let strings = [
        "",
        "samples",
        "count",
        "cpu",
        "nanoseconds",
        "leaf",
        "main.go",
        "thread",
        "main",
        "/bin/app",
        "root",
    ];
    Profile {
        sample_type: vec![ValueType { r#type: 1, unit: 2 }, ValueType { r#type: 3, unit: 4 }],
        sample: vec![
            Sample {
                location_id: vec![1, 2],
                value: vec![1, 10],
                label: vec![Label {
                    key: 7,
                    str: 8,
                    ..Default::default()
                }],
            },
            Sample {
                location_id: vec![2],
                value: vec![2, 20],
                label: vec![],
            },
        ],
        mapping: vec![Mapping {
            id: 1,
            filename: 9,
            ..Default::default()
        }],
        location: vec![
            Location {
                id: 1,
                mapping_id: 1,
                address: 0x1000,
                line: vec![Line {
                    function_id: 1,
                    line: 3,
                    column: 0,
                }],
                is_folded: false,
            },
            Location {
                id: 2,
                line: vec![Line {
                    function_id: 2,
                    line: 7,
                    column: 0,
                }],
                ..Default::default()
            },
        ],
        function: vec![
            Function {
                id: 1,
                name: 5,
                system_name: 5,
                filename: 6,
                start_line: 1,
            },
            Function {
                id: 2,
                name: 10,
                system_name: 10,
                filename: 6,
                start_line: 5,
            },
        ],
        string_table: strings.map(String::from).to_vec(),
        period_type: Some(ValueType { r#type: 3, unit: 4 }),
        period: 10_000_000,
        ..Default::default()
    }
}

fn refused(profile: &Profile) -> DecodeError {
    decode(&encode(profile), &DecodeLimits::default()).expect_err("profile must be refused")
}

/// Compresses `len` bytes of valid protobuf (`drop_frames: 0`, repeated) once and repeats the
/// gzip member `members` times: a valid (multi-member) gzip stream of `len * members` bytes at
/// a ratio of about 1000:1, which the reader can only refuse by its size.
fn gzip_bomb(len: usize, members: usize) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(&[0x38, 0x00].repeat(len / 2)).unwrap();
    encoder.finish().unwrap().repeat(members)
}

#[test]
fn round_trips_raw_and_gzip() {
    let profile = profile();
    let (raw, gzip) = (encode(&profile), encode_gzip(&profile));
    assert!(!is_gzip(&raw) && is_gzip(&gzip));
    assert_eq!(decode(&raw, &DecodeLimits::default()).unwrap(), profile);
    assert_eq!(decode(&gzip, &DecodeLimits::default()).unwrap(), profile);
}

#[test]
fn totals_sum_each_sample_type() {
    let totals = sample_type_totals(&profile());
    assert_eq!(
        totals,
        [
            ("samples".into(), "count".into(), 3),
            ("cpu".into(), "nanoseconds".into(), 30)
        ]
    );
}

#[test]
fn refuses_empty_input() {
    let limits = DecodeLimits::default();
    assert!(matches!(decode(b"", &limits), Err(DecodeError::Empty)));
    let empty_gzip = GzEncoder::new(Vec::new(), Compression::default()).finish().unwrap();
    assert!(matches!(decode(&empty_gzip, &limits), Err(DecodeError::Empty)));
}

#[test]
fn refuses_truncated_or_corrupt_gzip() {
    let gzip = encode_gzip(&profile());
    for len in [2, 10, gzip.len() / 2, gzip.len() - 8, gzip.len() - 1] {
        let err = decode(&gzip[..len], &DecodeLimits::default()).expect_err("truncated gzip");
        assert!(matches!(err, DecodeError::Gzip(_)), "cut at {len}: {err}");
    }
    let mut bad_crc = gzip.clone();
    let crc_at = bad_crc.len() - 8;
    bad_crc[crc_at] ^= 0xff;
    assert!(matches!(
        decode(&bad_crc, &DecodeLimits::default()),
        Err(DecodeError::Gzip(_))
    ));
}

#[test]
fn refuses_random_bytes() {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut random = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    for _ in 0..200 {
        let bytes = random(512);
        assert!(decode(&bytes, &DecodeLimits::default()).is_err());
        let mut gzip_looking = vec![0x1f, 0x8b];
        gzip_looking.extend(&bytes);
        assert!(matches!(
            decode(&gzip_looking, &DecodeLimits::default()),
            Err(DecodeError::Gzip(_))
        ));
    }
    // Field 0 does not exist: refused by prost, not by validation.
    assert!(matches!(
        decode(&[0x00, 0x13, 0x37], &DecodeLimits::default()),
        Err(DecodeError::Protobuf(_))
    ));
}

#[test]
fn refuses_gzip_bomb_with_a_small_limit() {
    let limits = DecodeLimits {
        max_decompressed_bytes: 1 << 20,
        ..DecodeLimits::default()
    };
    let bomb = gzip_bomb(1 << 20, 100);
    assert!(bomb.len() < 200 << 10, "100 MiB in {} bytes", bomb.len());
    assert!(matches!(decode(&bomb, &limits), Err(DecodeError::TooLarge { limit }) if limit == 1 << 20));
    // Exactly at the limit is still read (and then refused: it has no string table).
    assert!(matches!(
        decode(&bomb[..bomb.len() / 100], &limits),
        Err(DecodeError::EmptyStringTable)
    ));
    // Zeros are field 0: refused at the first byte, however much follows.
    let mut zeros = GzEncoder::new(Vec::new(), Compression::best());
    zeros.write_all(&vec![0; 100 << 20]).unwrap();
    assert!(matches!(
        decode(&zeros.finish().unwrap(), &limits),
        Err(DecodeError::Protobuf(_))
    ));
}

#[test]
fn refuses_gzip_bomb_with_the_default_limit() {
    let bomb = gzip_bomb(1 << 20, 100);
    let err = decode(&bomb, &DecodeLimits::default()).expect_err("100 MiB bomb");
    assert_eq!(
        err.to_string(),
        "profile is larger than 67108864 bytes once decompressed"
    );
}

#[test]
fn refuses_raw_profile_over_the_size_limit() {
    let raw = encode(&profile());
    let limits = DecodeLimits {
        max_decompressed_bytes: raw.len() - 1,
        ..DecodeLimits::default()
    };
    assert!(matches!(decode(&raw, &limits), Err(DecodeError::TooLarge { .. })));
}

#[test]
fn refuses_length_prefix_beyond_the_input() {
    // 2 GiB claimed by a sample (field 2), a string (field 6), a location (field 4) and a
    // sample's label, inside a few bytes of input: refused on the length prefix (or by prost,
    // for the label inside a 6-byte sample) without allocating the claimed length.
    let two_gib = [0x80, 0x80, 0x80, 0x80, 0x08];
    for prefix in [&[0x12][..], &[0x32], &[0x22], &[0x12, 0x06, 0x1a]] {
        let bytes = [prefix, &two_gib[..]].concat();
        let err = decode(&bytes, &DecodeLimits::default()).expect_err("bogus length");
        match prefix[0] {
            _ if prefix.len() > 1 => assert!(matches!(err, DecodeError::Protobuf(_)), "{err}"),
            0x12 => assert!(matches!(err, DecodeError::SampleTooLarge { sample: 0, .. }), "{err}"),
            0x32 => assert!(matches!(err, DecodeError::StringTooLong { index: 0, .. }), "{err}"),
            _ => assert!(
                matches!(err, DecodeError::EntryTooLarge { what: "location", .. }),
                "{err}"
            ),
        }
    }
    // A length within the limits but beyond the input: prost's error.
    let err = decode(&[0x12, 0x7f, 0x0a], &DecodeLimits::default()).expect_err("cut short");
    assert!(matches!(err, DecodeError::Protobuf(_)), "{err}");
}

/// A valid profile followed by one sample whose `ids` location ids (all 1, a byte each, packed)
/// are streamed through gzip: the sample is `ids` bytes long on the wire and 8 × `ids` decoded.
fn gzip_with_deep_sample(ids: usize) -> Vec<u8> {
    let mut header = encode(&profile());
    let mut packed = vec![0x0a];
    prost::encoding::encode_varint(ids as u64, &mut packed);
    let value = [0x12, 0x02, 0x01, 0x01]; // value: [1, 1], packed
    header.push(0x12);
    prost::encoding::encode_varint((packed.len() + ids + value.len()) as u64, &mut header);
    header.extend(&packed);
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(&header).unwrap();
    let chunk = vec![0x01; 1 << 20];
    let mut left = ids;
    while left > 0 {
        let n = left.min(chunk.len());
        encoder.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    encoder.write_all(&value).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn refuses_a_sample_of_60m_location_ids_from_its_length_prefix() {
    let gzip = gzip_with_deep_sample(60_000_000);
    assert!(gzip.len() < 100 << 10, "{} bytes gzipped", gzip.len());
    let started = std::time::Instant::now();
    let err = decode(&gzip, &DecodeLimits::default()).expect_err("60 M ids");
    assert!(
        matches!(err, DecodeError::SampleTooLarge { sample: 2, len, .. } if len > 60_000_000),
        "{err}"
    );
    assert!(err.to_string().contains("max_locations_per_sample (65536)"), "{err}");
    // Refused on the prefix: nothing of the 60 MB was decompressed.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_sample_between_the_stack_depth_and_the_hard_cap_is_truncated_and_over_it_refused() {
    let limits = DecodeLimits {
        max_stack_depth: 100,
        max_locations_per_sample: 1000,
        ..DecodeLimits::default()
    };
    let truncated = decode(&gzip_with_deep_sample(1000), &limits).unwrap();
    assert_eq!(truncated.sample[2].location_id, vec![1; 100]);
    assert_eq!(
        truncated.sample[2].location_id.capacity(),
        100,
        "the dropped ids are freed"
    );
    // 1001 ids fit the length bound (it allows 10 bytes an id) but not the count.
    let err = decode(&gzip_with_deep_sample(1001), &limits).expect_err("1001 ids");
    assert!(
        matches!(
            err,
            DecodeError::SampleTooDeep {
                sample: 2,
                count: 1001,
                limit: 1000
            }
        ),
        "{err}"
    );
}

#[test]
fn refuses_too_many_labels_and_too_large_a_decoded_size() {
    let raw = encode(&profile());
    let no_labels = DecodeLimits {
        max_labels_per_sample: 0,
        ..DecodeLimits::default()
    };
    let err = decode(&raw, &no_labels).expect_err("one label");
    assert_eq!(
        err.to_string(),
        "sample 0 has 1 labels, more than max_labels_per_sample (0)"
    );

    let decoded = decode(&raw, &DecodeLimits::default()).unwrap();
    let size = decoded_size(&decoded);
    let exact = DecodeLimits {
        max_decoded_bytes: size,
        ..DecodeLimits::default()
    };
    assert_eq!(decode(&raw, &exact).unwrap(), decoded, "the estimate is decoded_size");
    let under = DecodeLimits {
        max_decoded_bytes: size - 1,
        ..DecodeLimits::default()
    };
    assert!(matches!(decode(&raw, &under), Err(DecodeError::DecodedTooLarge { .. })));
    // 10 000 one-byte ids: 10 KB on the wire, 32 KB decoded once truncated to 4096.
    let deep = gzip_with_deep_sample(10_000);
    let small = DecodeLimits {
        max_decoded_bytes: 16 << 10,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        decode(&deep, &small),
        Err(DecodeError::DecodedTooLarge { limit }) if limit == 16 << 10
    ));
}

#[test]
fn refuses_profiles_over_count_limits() {
    let raw = encode(&profile());
    for what in ["samples", "strings", "locations", "functions", "mappings"] {
        let mut limits = DecodeLimits::default();
        *match what {
            "samples" => &mut limits.max_samples,
            "strings" => &mut limits.max_strings,
            "locations" => &mut limits.max_locations,
            "functions" => &mut limits.max_functions,
            _ => &mut limits.max_mappings,
        } = 0;
        let err = decode(&raw, &limits).expect_err(what);
        assert!(
            matches!(err, DecodeError::TooMany { what: w, limit: 0, .. } if w == what),
            "{err}"
        );
        assert!(matches!(
            validate(&profile(), &limits),
            Err(DecodeError::TooMany { .. })
        ));
    }
}

#[test]
fn refuses_overlong_strings() {
    let limits = DecodeLimits {
        max_string_length: 10,
        ..DecodeLimits::default()
    };
    let err = decode(&encode(&profile()), &limits).expect_err("\"nanoseconds\" is 11 bytes");
    assert_eq!(err.to_string(), "string 4 is 11 bytes long, more than the limit of 10");
}

#[test]
fn refuses_string_index_out_of_range() {
    let mut bad = profile();
    bad.function[0].name = 40;
    assert_eq!(
        refused(&bad).to_string(),
        "function 1 name: string index 40 out of range (table has 11 strings)"
    );

    let mut negative = profile();
    negative.sample[0].label[0].key = -1;
    assert_eq!(
        refused(&negative).to_string(),
        "sample 0 label 0 key: string index -1 out of range (table has 11 strings)"
    );

    let mut comment = profile();
    comment.comment = vec![1, 11];
    assert!(matches!(refused(&comment), DecodeError::StringIndex { index: 11, .. }));
}

#[test]
fn refuses_bad_string_table() {
    let mut first = profile();
    first.string_table[0] = "oops".into();
    assert!(matches!(refused(&first), DecodeError::FirstStringNotEmpty(s) if s == "oops"));

    let empty = Profile {
        string_table: vec![],
        ..profile()
    };
    assert!(matches!(refused(&empty), DecodeError::EmptyStringTable));
}

#[test]
fn refuses_profile_without_sample_types() {
    let bad = Profile {
        sample_type: vec![],
        sample: vec![],
        ..profile()
    };
    assert!(matches!(refused(&bad), DecodeError::NoSampleTypes));
}

#[test]
fn refuses_dangling_references() {
    let mut function = profile();
    function.location[1].line[0].function_id = 9;
    assert_eq!(
        refused(&function).to_string(),
        "location 2 line 0 references function id 9 that does not exist"
    );

    let mut no_function = profile();
    no_function.location[0].line[0].function_id = 0;
    assert!(matches!(
        refused(&no_function),
        DecodeError::MissingFunction {
            location: 1,
            line: 0,
            id: 0
        }
    ));

    let mut location = profile();
    location.sample[1].location_id = vec![2, 99];
    assert_eq!(
        refused(&location).to_string(),
        "sample 1 references location id 99 that does not exist"
    );

    let mut mapping = profile();
    mapping.location[1].mapping_id = 7;
    assert!(matches!(
        refused(&mapping),
        DecodeError::MissingMapping { location: 2, id: 7 }
    ));
}

#[test]
fn refuses_wrong_value_count() {
    let mut bad = profile();
    bad.sample[1].value.push(3);
    assert_eq!(
        refused(&bad).to_string(),
        "sample 1 has 3 values but the profile has 2 sample types"
    );
}

#[test]
fn refuses_zero_ids() {
    let mut mapping = profile();
    mapping.mapping[0].id = 0;
    mapping.location[0].mapping_id = 0;
    assert!(matches!(
        refused(&mapping),
        DecodeError::ZeroId {
            kind: "mapping",
            position: 0
        }
    ));

    let mut function = profile();
    function.function[1].id = 0;
    assert_eq!(refused(&function).to_string(), "function 1 has id 0, which is reserved");

    let mut location = profile();
    location.location[0].id = 0;
    assert!(matches!(
        refused(&location),
        DecodeError::ZeroId {
            kind: "location",
            position: 0
        }
    ));
}

#[test]
fn refuses_duplicate_ids() {
    let mut function = profile();
    function.function[1].id = 1;
    assert_eq!(refused(&function).to_string(), "more than one function has id 1");

    let mut location = profile();
    location.location[1].id = 1;
    assert!(matches!(
        refused(&location),
        DecodeError::DuplicateId {
            kind: "location",
            id: 1
        }
    ));

    let mut mapping = profile();
    mapping.mapping.push(mapping.mapping[0]);
    assert!(matches!(
        refused(&mapping),
        DecodeError::DuplicateId { kind: "mapping", id: 1 }
    ));
}

#[test]
fn truncates_deep_stacks_keeping_the_root() {
    let mut deep = profile();
    deep.sample[0].location_id = vec![1, 1, 2, 1, 2];
    let limits = DecodeLimits {
        max_stack_depth: 2,
        ..DecodeLimits::default()
    };
    let decoded = decode(&encode(&deep), &limits).unwrap();
    assert_eq!(decoded.sample[0].location_id, [1, 2]);
    assert_eq!(decoded.sample[1].location_id, [2]);
    assert_eq!(sample_type_totals(&decoded), sample_type_totals(&deep));
}

#[test]
fn reads_invalid_utf8_lossily() {
    let mut marked = profile();
    marked.string_table[5] = "le\x7f\x7ef".into();
    let mut raw = encode(&marked);
    let at = raw.windows(2).position(|w| w == [0x7f, 0x7e]).unwrap();
    raw[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
    let decoded = decode(&raw, &DecodeLimits::default()).unwrap();
    assert_eq!(decoded.string_table[5], "le\u{fffd}\u{fffd}f");
}

#[test]
fn limits_deserialize_with_defaults() {
    let limits: DecodeLimits = serde_json::from_str(r#"{"max_samples": 5}"#).unwrap();
    assert_eq!(
        limits,
        DecodeLimits {
            max_samples: 5,
            ..DecodeLimits::default()
        }
    );
    assert!(serde_json::from_str::<DecodeLimits>(r#"{"max_sample": 5}"#).is_err());
}
