//! Decodes every profile of the shared corpus (`../shared/corpus`, or `$PYRITE_CORPUS_DIR`) and
//! checks it against what Go's own pprof tool reads from the same file (`MANIFEST.tsv`).

use std::collections::HashSet;
use std::path::PathBuf;

use pyrite::pprof::{self, DecodeError, DecodeLimits, Profile};

fn corpus_dir() -> PathBuf {
    std::env::var_os("PYRITE_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"))
}

/// What Pyrite does with a file Go's tool refuses; an unlisted REJECTED file fails the test.
fn expected_refusal(file: &str, err: &DecodeError) -> bool {
    match file {
        // .NET profiler output naming its functions with id 0: reserved, and Go refuses it too.
        "pyroscope__og_convert_pprof_dotnet-pprof-73.pb.gz" | "pyroscope_dotnet-pprof-3.pb.gz" => {
            matches!(err, DecodeError::ZeroId { kind: "function", .. })
        }
        // A fuzzer input in Go's legacy text heap format ("--- heapz 1 ---"), malformed even as
        // that. Pyrite reads only the protobuf format, so it is not a pprof protobuf.
        "gpprof_fuzz_7e3c92482f6f39fc502b822ded792c589849cca8" => matches!(err, DecodeError::Protobuf(_)),
        _ => false,
    }
}

/// `type/unit=total,...` as `tools/pprof-totals.py` prints it.
fn parse_totals(field: &str) -> Vec<(String, i64)> {
    field
        .split(',')
        .map(|entry| {
            let (name, total) = entry
                .rsplit_once('=')
                .unwrap_or_else(|| panic!("bad totals entry {entry:?}"));
            (
                name.to_owned(),
                total.parse().unwrap_or_else(|_| panic!("bad total in {entry:?}")),
            )
        })
        .collect()
}

/// The sample count as the manifest gives it: after Go's `profile.Merge`, which drops samples
/// whose values are all zero and merges samples with the same stack and the same labels.
fn merged_sample_count(profile: &Profile) -> usize {
    let string = |index: i64| profile.string_table[index as usize].as_str();
    profile
        .sample
        .iter()
        .filter(|sample| sample.value.iter().any(|&value| value != 0))
        .map(|sample| {
            let mut labels: Vec<_> = sample
                .label
                .iter()
                .map(|label| (string(label.key), string(label.str), label.num, string(label.num_unit)))
                .collect();
            labels.sort_unstable();
            (&sample.location_id, labels)
        })
        .collect::<HashSet<_>>()
        .len()
}

#[test]
fn every_corpus_file_decodes_as_go_reads_it() {
    let dir = corpus_dir();
    let manifest_path = dir.join("MANIFEST.tsv");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap_or_else(|err| {
        panic!(
            "corpus manifest {} unreadable ({err}); set PYRITE_CORPUS_DIR",
            manifest_path.display()
        )
    });
    let mut lines = manifest.lines();
    let header: Vec<&str> = lines.next().expect("manifest has a header").split('\t').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|&c| c == name)
            .unwrap_or_else(|| panic!("no {name} column"))
    };
    let (file_col, samples_col, totals_col) = (column("file"), column("samples_go_tool"), column("totals_by_go_pprof"));

    let limits = DecodeLimits::default();
    let (mut rows, mut checked, mut failures) = (0, HashSet::new(), Vec::new());
    for line in lines.filter(|line| !line.trim().is_empty()) {
        rows += 1;
        let fields: Vec<&str> = line.split('\t').collect();
        let file = fields[file_col];
        let bytes = std::fs::read(dir.join("files").join(file)).unwrap_or_else(|err| panic!("{file}: {err}"));
        let decoded = pprof::decode(&bytes, &limits);
        checked.insert(file);

        if fields[samples_col] == "REJECTED" {
            match decoded {
                Err(err) if expected_refusal(file, &err) => {}
                Err(err) => failures.push(format!("{file}: refused with an unexpected error: {err}")),
                Ok(_) => failures.push(format!("{file}: accepted, but it must be refused")),
            }
            continue;
        }
        let profile = match decoded {
            Ok(profile) => profile,
            Err(err) => {
                failures.push(format!("{file}: {err}"));
                continue;
            }
        };
        let ours: Vec<(String, i64)> = pprof::sample_type_totals(&profile)
            .into_iter()
            .map(|(kind, unit, total)| (format!("{kind}/{unit}"), total))
            .collect();
        let go = parse_totals(fields[totals_col]);
        if ours != go {
            failures.push(format!("{file}: totals {ours:?}, Go reads {go:?}"));
        }
        let merged = merged_sample_count(&profile);
        if merged.to_string() != fields[samples_col] {
            failures.push(format!(
                "{file}: {merged} samples after merging, Go reports {}",
                fields[samples_col]
            ));
        }
        if file == "pyroscope__og_convert_pprof_invalid_utf8.pb.gz"
            && !profile
                .string_table
                .iter()
                .any(|s| s.contains(char::REPLACEMENT_CHARACTER))
        {
            failures.push(format!("{file}: invalid UTF-8 was not replaced"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {rows} corpus files disagree with Go:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(rows > 0, "manifest {} lists no files", manifest_path.display());
    assert_eq!(
        checked.len(),
        rows,
        "every manifest row must be checked, each file once"
    );
    let on_disk: HashSet<String> = std::fs::read_dir(dir.join("files"))
        .expect("corpus files directory")
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .into_string()
                .expect("UTF-8 file name")
        })
        .collect();
    assert_eq!(
        on_disk,
        checked.iter().map(|&file| file.to_owned()).collect(),
        "files/ and the manifest disagree"
    );
}
