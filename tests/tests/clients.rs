//! Outside clients, unchanged, against a real vecgate cluster: the Python qdrant-client (pinned
//! in tests/python/requirements.txt) must read back exactly what it reads from a single shardd.

use e2e::*;
use serde_json::Value;

/// Runs a client scenario against a 3x2 cluster and against one shardd, asserts both read back
/// the same, and returns what the cluster answered.
fn same_through_cluster_and_one_shard(script: &str) -> Value {
    let cluster = Cluster::start(3, &["eu", "eu"], "");
    let dir = tempfile::tempdir().unwrap();
    let single = shardd(dir.path(), &[]);
    let routed: Value = serde_json::from_str(&run_python(script, &[&cluster.url()])).unwrap();
    let alone: Value = serde_json::from_str(&run_python(script, &[&single.url()])).unwrap();
    assert_eq!(routed, alone, "{script}: the cluster and one shard differ");
    routed
}

#[test]
fn qdrant_client_reads_the_same_from_a_cluster_as_from_one_shard() {
    let routed = same_through_cluster_and_one_shard("qdrant_client_scenario.py");
    assert_eq!(routed["count"], 70);
    assert_eq!(routed["scroll"].as_array().unwrap().len(), 70);
    assert!(routed["version"].is_string());
}

#[test]
fn langchain_reads_the_same_from_a_cluster_as_from_one_shard() {
    let routed = same_through_cluster_and_one_shard("langchain_scenario.py");
    for mode in ["dense", "sparse", "hybrid"] {
        let r = &routed[mode];
        assert_eq!(r["search"].as_array().unwrap().len(), 5, "{mode}: {r}");
        for m in r["filtered"].as_array().unwrap() {
            assert_eq!(m["topic"], "biology", "{mode}");
            assert!(m["year"].as_u64().unwrap() >= 2010, "{mode}");
        }
        assert!(
            r["after_delete"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p[0].as_u64().unwrap() >= 4),
            "{mode}: deleted documents came back"
        );
        assert_eq!(r["get_by_ids"], serde_json::json!([4, 5, 6, 7]), "{mode}");
        assert_eq!(
            r["existing"], r["after_delete"],
            "{mode}: from_existing_collection reads the same"
        );
    }
    assert_eq!(routed["dense"]["mmr"].as_array().unwrap().len(), 4);
}

#[test]
fn llamaindex_reads_the_same_from_a_cluster_as_from_one_shard() {
    let routed = same_through_cluster_and_one_shard("llamaindex_scenario.py");
    for name in ["li_dense", "li_hybrid"] {
        let r = &routed[name];
        assert_eq!(r["search"].as_array().unwrap().len(), 5, "{name}: {r}");
        assert!(
            r["filtered"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p[0].as_u64().unwrap() % 4 == 1),
            "{name}: only biology"
        );
        assert_eq!(
            r["count"], 40,
            "{name}: delete(ref_doc_id) removes that document's 8 nodes"
        );
        assert!(
            r["after_delete"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p[0].as_u64().unwrap() % 6 != 1),
            "{name}"
        );
    }
    assert_eq!(routed["li_hybrid"]["sparse"].as_array().unwrap().len(), 5);
}

#[test]
fn haystack_reads_the_same_from_a_cluster_as_from_one_shard() {
    let routed = same_through_cluster_and_one_shard("haystack_scenario.py");
    for name in ["hs_dense", "hs_sparse"] {
        let r = &routed[name];
        assert_eq!(r["count"], 48, "{name}");
        assert_eq!(
            r["filter_documents"],
            serde_json::json!([13, 17, 21, 37, 41, 45]),
            "{name}: filter_documents pages through scroll"
        );
        assert_eq!(r["dense"].as_array().unwrap().len(), 5, "{name}");
        assert_eq!(r["count_after_delete"], 42, "{name}");
        assert_eq!(
            r["all_after_delete"].as_array().unwrap().len(),
            42,
            "{name}"
        );
    }
    assert_eq!(routed["hs_sparse"]["sparse"].as_array().unwrap().len(), 5);
    assert_eq!(routed["hs_sparse"]["hybrid"].as_array().unwrap().len(), 5);
}
