//! Legacy flamebearer JSON, as `/pyroscope/render` and `/pyroscope/render-diff` return it:
//! the same levels as the `querier.v1` flame graph, wrapped with units and an optional timeline.

use serde_json::{Value, json};

use super::flamegraph::{flamegraph, flamegraph_diff};
use crate::model::FlameTree;
use crate::model::ProfileType;
use crate::proto::querier::v1::Level;

/// Per-step totals drawn above the flame graph.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Timeline {
    pub start_time_s: i64,
    pub step_s: i64,
    pub samples: Vec<u64>,
}

/// The `"single"` flamebearer profile of `tree`.
pub fn flamebearer(
    tree: &FlameTree,
    profile_type: &ProfileType,
    max_nodes: Option<usize>,
    timeline: Option<Timeline>,
) -> Value {
    let graph = flamegraph(tree, max_nodes);
    let timeline = timeline.map(|timeline| {
        json!({
            "startTime": timeline.start_time_s,
            "samples": timeline.samples,
            "durationDelta": timeline.step_s,
            "watermarks": null,
        })
    });
    json!({
        "version": 1,
        "flamebearer": {
            "names": graph.names,
            "levels": levels(&graph.levels),
            "numTicks": graph.total,
            "maxSelf": graph.max_self,
        },
        "metadata": metadata(profile_type, "single"),
        "timeline": timeline,
        "groups": null,
        "heatmap": null,
    })
}

/// The `"double"` flamebearer profile comparing `left` with `right`.
pub fn flamebearer_diff(
    left: &FlameTree,
    right: &FlameTree,
    profile_type: &ProfileType,
    max_nodes: Option<usize>,
) -> Value {
    let graph = flamegraph_diff(left, right, max_nodes);
    // Pyroscope's Go server puts the ticks next to "flamebearer", its UI reads them from
    // inside it: both places keep either reader working.
    json!({
        "version": 1,
        "flamebearer": {
            "names": graph.names,
            "levels": levels(&graph.levels),
            "numTicks": graph.total,
            "maxSelf": graph.max_self,
            "leftTicks": graph.left_ticks,
            "rightTicks": graph.right_ticks,
        },
        "metadata": metadata(profile_type, "double"),
        "leftTicks": graph.left_ticks,
        "rightTicks": graph.right_ticks,
        "timeline": null,
        "groups": null,
        "heatmap": null,
    })
}

fn levels(levels: &[Level]) -> Vec<&[i64]> {
    levels.iter().map(|level| level.values.as_slice()).collect()
}

/// Units and sample rate as Pyroscope's `ExportToFlamebearer` picks them.
fn metadata(profile_type: &ProfileType, format: &str) -> Value {
    let (units, sample_rate) = match profile_type.sample_type.as_str() {
        "cpu" => ("samples", 1_000_000_000),
        "inuse_objects" | "alloc_objects" | "goroutine" | "samples" => ("objects", 100),
        _ => (profile_type.sample_unit.as_str(), 100),
    };
    json!({
        "format": format,
        "units": units,
        "sampleRate": sample_rate,
        "spyName": "",
        "name": profile_type.sample_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::testutil::{decode, sample_tree, tree_paths};

    fn profile_type(id: &str) -> ProfileType {
        ProfileType::parse(id).unwrap()
    }

    fn json_levels(value: &Value) -> Vec<Vec<i64>> {
        serde_json::from_value(value["flamebearer"]["levels"].clone()).unwrap()
    }

    fn json_names(value: &Value) -> Vec<String> {
        serde_json::from_value(value["flamebearer"]["names"].clone()).unwrap()
    }

    #[test]
    fn single_profile() {
        let tree = sample_tree();
        let cpu = profile_type("process_cpu:cpu:nanoseconds:cpu:nanoseconds");
        let timeline = Timeline {
            start_time_s: 1_700_000_000,
            step_s: 10,
            samples: vec![1, 0, 3],
        };
        let value = flamebearer(&tree, &cpu, None, Some(timeline));

        assert_eq!(value["version"], 1);
        assert_eq!(value["flamebearer"]["numTicks"], 110);
        assert_eq!(value["flamebearer"]["maxSelf"], 50);
        assert_eq!(
            value["metadata"],
            json!({"format": "single", "units": "samples", "sampleRate": 1_000_000_000u64,
                   "spyName": "", "name": "cpu"})
        );
        assert_eq!(
            value["timeline"],
            json!({"startTime": 1_700_000_000, "samples": [1, 0, 3], "durationDelta": 10, "watermarks": null})
        );
        assert!(value["groups"].is_null() && value["heatmap"].is_null());

        let names = json_names(&value);
        let levels = json_levels(&value);
        assert_eq!(levels[0], vec![0, 110, 0, 0]);
        let decoded: std::collections::BTreeMap<_, _> = decode(&names, &levels, 1)
            .into_iter()
            .map(|node| (node.path, (node.total[0], node.self_value[0])))
            .collect();
        assert_eq!(decoded, tree_paths(&tree));
        assert!(flamebearer(&tree, &cpu, None, None)["timeline"].is_null());
    }

    #[test]
    fn units_follow_the_profile_type() {
        let tree = sample_tree();
        let units = |id: &str| {
            let metadata = &flamebearer(&tree, &profile_type(id), None, None)["metadata"];
            (
                metadata["units"].as_str().unwrap().to_string(),
                metadata["sampleRate"].as_u64().unwrap(),
            )
        };
        assert_eq!(units("memory:inuse_space:bytes:space:bytes"), ("bytes".into(), 100));
        assert_eq!(units("memory:alloc_objects:count:space:bytes"), ("objects".into(), 100));
        assert_eq!(
            units("goroutines:goroutine:count:goroutine:count"),
            ("objects".into(), 100)
        );
        assert_eq!(
            units("wall:wall:nanoseconds:wall:nanoseconds"),
            ("nanoseconds".into(), 100)
        );
    }

    #[test]
    fn diff_profile() {
        let left = sample_tree();
        let mut right = FlameTree::new();
        right.insert_names(&["main", "other_work"], 8);
        right.insert_names(&["gc", "mark"], 4);
        let memory = profile_type("memory:inuse_space:bytes:space:bytes");
        let value = flamebearer_diff(&left, &right, &memory, None);

        assert_eq!(value["metadata"]["format"], "double");
        assert_eq!(value["flamebearer"]["leftTicks"], 110);
        assert_eq!(value["flamebearer"]["rightTicks"], 12);
        assert_eq!(value["flamebearer"]["numTicks"], 122);
        let names = json_names(&value);
        let levels = json_levels(&value);
        assert!(levels.iter().all(|level| level.len() % 7 == 0));
        assert_eq!(levels[0], vec![0, 110, 0, 0, 12, 0, 0]);
        let decoded = decode(&names, &levels, 2);
        let only_right = decoded
            .iter()
            .find(|node| node.path == ["total", "main", "other_work"])
            .unwrap();
        assert_eq!(
            (only_right.total.clone(), only_right.self_value.clone()),
            (vec![0, 8], vec![0, 8])
        );
        let only_left = decoded
            .iter()
            .find(|node| node.path == ["total", "bg", "hash"])
            .unwrap();
        assert_eq!(only_left.total, vec![1, 0]);
    }
}
