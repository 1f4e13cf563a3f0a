//! Outside clients, unchanged, against a real vecgate cluster: the Python qdrant-client (pinned
//! in tests/python/requirements.txt) must read back exactly what it reads from a single shardd.

use e2e::*;
use serde_json::Value;

#[test]
fn qdrant_client_reads_the_same_from_a_cluster_as_from_one_shard() {
    let cluster = Cluster::start(3, &["eu", "eu"], "");
    let dir = tempfile::tempdir().unwrap();
    let single = shardd(dir.path(), &[]);
    let routed: Value =
        serde_json::from_str(&run_python("qdrant_client_scenario.py", &[&cluster.url()])).unwrap();
    let alone: Value =
        serde_json::from_str(&run_python("qdrant_client_scenario.py", &[&single.url()])).unwrap();
    assert_eq!(routed, alone);
    assert_eq!(routed["count"], 70);
    assert_eq!(routed["scroll"].as_array().unwrap().len(), 70);
    assert!(routed["version"].is_string());
}
