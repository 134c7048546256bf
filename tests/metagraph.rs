//! `sv72 metagraph sync` against a stand-in subtensor JSON-RPC server on 127.0.0.1 that serves
//! SCALE payloads built here by an encoder independent of the one under test.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sv72::chain::scale::{decode_neurons_lite, decode_subnet_state};
use sv72::chain::{fetch_snapshot, Metagraph, StakeSource, SyncOptions};
use sv72::serve::blacklist::Blacklist;

use crate::common::node::{hex0x, Handler, Node, Reply, BLOCK_HASH};

// ---------- an independent SCALE encoder ----------

mod scale {
    /// SCALE compact encoding, written from the codec specification.
    pub fn compact(v: u128) -> Vec<u8> {
        if v < 1 << 6 {
            vec![(v as u8) << 2]
        } else if v < 1 << 14 {
            (((v as u16) << 2) | 0b01).to_le_bytes().to_vec()
        } else if v < 1 << 30 {
            (((v as u32) << 2) | 0b10).to_le_bytes().to_vec()
        } else {
            let le = v.to_le_bytes();
            let used = 16 - (v.leading_zeros() / 8) as usize;
            let n = used.max(4);
            let mut out = vec![(((n - 4) as u8) << 2) | 0b11];
            out.extend_from_slice(&le[..n]);
            out
        }
    }

    pub fn vec_of(items: &[Vec<u8>]) -> Vec<u8> {
        let mut out = compact(items.len() as u128);
        for i in items {
            out.extend_from_slice(i);
        }
        out
    }

    pub fn compacts(vals: &[u128]) -> Vec<u8> {
        vec_of(&vals.iter().map(|v| compact(*v)).collect::<Vec<_>>())
    }

    #[test]
    fn encoder_matches_spec_examples() {
        assert_eq!(compact(0), [0x00]);
        assert_eq!(compact(1), [0x04]);
        assert_eq!(compact(42), [0xa8]);
        assert_eq!(compact(69), [0x15, 0x01]);
        assert_eq!(compact(65535), [0xfe, 0xff, 0x03, 0x00]);
        assert_eq!(compact(1 << 30), [0x03, 0x00, 0x00, 0x00, 0x40]);
        assert_eq!(
            compact(100_000_000_000_000),
            [0x0b, 0x00, 0x40, 0x7a, 0x10, 0xf3, 0x5a]
        );
    }
}

/// Alice's and Bob's well-known development keys and their SS58 (format 42) addresses.
const ALICE: &str = "d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d";
const ALICE_SS58: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
const BOB: &str = "8eaf04151687736326c9fea17e25fc5287613693c912909cb226aa4794f26a48";
const BOB_SS58: &str = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty";

fn key(hex_str: &str) -> [u8; 32] {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex_str[2 * i..2 * i + 2], 16).unwrap();
    }
    k
}

struct TestNeuron {
    hotkey: [u8; 32],
    coldkey: [u8; 32],
    uid: u16,
    permit: bool,
    /// `(coldkey, alpha rao)` of the lite info.
    alpha: Vec<([u8; 32], u64)>,
    /// `SubnetState.total_stake` in rao.
    total: u64,
}

fn neurons() -> Vec<TestNeuron> {
    vec![
        // Listed out of uid order on purpose.
        TestNeuron {
            hotkey: [7u8; 32],
            coldkey: [8u8; 32],
            uid: 2,
            permit: false,
            alpha: vec![([8u8; 32], 20_000)],
            total: 20_000,
        },
        TestNeuron {
            hotkey: key(ALICE),
            coldkey: key(BOB),
            uid: 0,
            permit: true,
            alpha: vec![([1u8; 32], 1_000_000_000_000), ([2u8; 32], 5)],
            // 1,234,567.891234567 TAO: needs the big-integer compact mode.
            total: 1_234_567_891_234_567,
        },
        TestNeuron {
            hotkey: key(BOB),
            coldkey: key(BOB),
            uid: 1,
            permit: true,
            alpha: vec![],
            total: 42,
        },
    ]
}

fn encode_neuron_lite(n: &TestNeuron, netuid: u16) -> Vec<u8> {
    use scale::compact;
    let mut b = Vec::new();
    b.extend_from_slice(&n.hotkey);
    b.extend_from_slice(&n.coldkey);
    b.extend(compact(n.uid as u128));
    b.extend(compact(netuid as u128));
    b.push(1); // active
               // AxonInfo: block u64, version u32, ip u128, port u16, ip_type, protocol, placeholder1, 2.
    b.extend(4_000_000u64.to_le_bytes());
    b.extend(900u32.to_le_bytes());
    b.extend(0x0a00_0001u128.to_le_bytes());
    b.extend(8091u16.to_le_bytes());
    b.extend([4, 4, 0, 0]);
    // PrometheusInfo: block u64, version u32, ip u128, port u16, ip_type.
    b.extend(0u64.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(0u128.to_le_bytes());
    b.extend(0u16.to_le_bytes());
    b.push(0);
    b.extend(scale::vec_of(
        &n.alpha
            .iter()
            .map(|(c, a)| {
                let mut e = c.to_vec();
                e.extend(compact(*a as u128));
                e
            })
            .collect::<Vec<_>>(),
    ));
    b.extend(compact(0)); // rank
    b.extend(compact(123_456_789_012)); // emission
    b.extend(compact(65535)); // incentive
    b.extend(compact(300)); // consensus
    b.extend(compact(0)); // trust
    b.extend(compact(65535)); // validator_trust
    b.extend(compact(1)); // dividends
    b.extend(compact(5_678_901)); // last_update
    b.push(n.permit as u8);
    b.extend(compact(65535)); // pruning_score
    b
}

fn neurons_payload(ns: &[TestNeuron], netuid: u16) -> Vec<u8> {
    scale::vec_of(
        &ns.iter()
            .map(|n| encode_neuron_lite(n, netuid))
            .collect::<Vec<_>>(),
    )
}

fn subnet_state_payload(ns: &[TestNeuron], netuid: u16) -> Vec<u8> {
    let mut by_uid: Vec<&TestNeuron> = ns.iter().collect();
    by_uid.sort_by_key(|n| n.uid);
    let keys = |f: &dyn Fn(&TestNeuron) -> [u8; 32]| {
        scale::vec_of(&by_uid.iter().map(|n| f(n).to_vec()).collect::<Vec<_>>())
    };
    let per = |f: &dyn Fn(&TestNeuron) -> u128| {
        scale::compacts(&by_uid.iter().map(|n| f(n)).collect::<Vec<_>>())
    };
    let bools = |f: &dyn Fn(&TestNeuron) -> bool| {
        scale::vec_of(&by_uid.iter().map(|n| vec![f(n) as u8]).collect::<Vec<_>>())
    };
    let mut b = vec![1u8]; // Some
    b.extend(scale::compact(netuid as u128));
    b.extend(keys(&|n| n.hotkey));
    b.extend(keys(&|n| n.coldkey));
    b.extend(bools(&|_| true)); // active
    b.extend(bools(&|n| n.permit));
    b.extend(scale::compacts(&[])); // pruning_score (deprecated: empty)
    b.extend(per(&|_| 5_678_901)); // last_update
    b.extend(per(&|_| 123_456_789_012)); // emission
    b.extend(per(&|_| 1)); // dividends
    b.extend(per(&|_| 65535)); // incentives
    b.extend(per(&|_| 300)); // consensus
    b.extend(scale::compacts(&[])); // trust
    b.extend(scale::compacts(&[])); // rank
    b.extend(per(&|n| 1000 + n.uid as u128)); // block_at_registration
    b.extend(per(&|n| n.alpha.iter().map(|(_, a)| *a as u128).sum())); // alpha_stake
    b.extend(per(&|_| 7)); // tao_stake
    b.extend(per(&|n| n.total as u128)); // total_stake
    b.extend(scale::vec_of(
        &by_uid
            .iter()
            .map(|_| scale::compacts(&[1, 2]))
            .collect::<Vec<_>>(),
    )); // emission_history
    b
}

/// A node answering like subtensor: runtime API calls through `state_call` (or, with `legacy`,
/// only through the custom RPC methods), with the given payloads.
fn chain(neurons: Vec<u8>, state: Vec<u8>, legacy: bool) -> Arc<Handler> {
    Arc::new(move |method, params| match method {
        "chain_getBlockHash" => Reply::Result(json!(BLOCK_HASH)),
        "chain_getHeader" => Reply::Result(json!({"number": "0x3039", "parentHash": BLOCK_HASH})),
        "state_call" if legacy => Reply::Error(
            4003,
            "Client error: Execution failed: Exported method not found",
        ),
        "state_call" => match params[0].as_str() {
            Some("NeuronInfoRuntimeApi_get_neurons_lite") => Reply::Result(json!(hex0x(&neurons))),
            Some("SubnetInfoRuntimeApi_get_subnet_state") => Reply::Result(json!(hex0x(&state))),
            _ => Reply::Error(4003, "Exported method not found"),
        },
        "neuronInfo_getNeuronsLite" if legacy => Reply::Result(json!(neurons)),
        "subnetInfo_getSubnetState" if legacy => Reply::Result(json!(state)),
        _ => Reply::Error(-32601, "Method not found"),
    })
}

fn good_chain(legacy: bool) -> Arc<Handler> {
    let ns = neurons();
    chain(
        neurons_payload(&ns, 72),
        subnet_state_payload(&ns, 72),
        legacy,
    )
}

fn opts(endpoint: &str, stake: StakeSource) -> SyncOptions {
    SyncOptions {
        endpoint: endpoint.to_string(),
        netuid: 72,
        stake,
        timeout: Duration::from_secs(10),
    }
}

fn sv72(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sv72"))
        .args(args)
        .env("SV72_NO_PROGRESS", "1")
        .env_remove("SV72_SUBTENSOR")
        .output()
        .unwrap()
}

fn err_of(opts: &SyncOptions) -> String {
    format!("{:#}", fetch_snapshot(opts, |_| {}).unwrap_err())
}

const OLD: &str = r#"[{"hotkey":"old","uid":9,"stake":1.0,"validator_permit":true}]"#;

fn assert_untouched(p: &Path) {
    assert_eq!(
        std::fs::read_to_string(p).unwrap(),
        OLD,
        "old snapshot changed"
    );
}

// ---------- tests ----------

#[test]
fn cli_sync_writes_snapshot_that_serve_loads() {
    let node = Node::start(good_chain(false));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mg.json");
    std::fs::write(&path, OLD).unwrap();
    // No --out: the default is serve.metagraph.
    let set = format!("serve.metagraph={}", path.display());
    let out = sv72(&["--set", &set, "metagraph", "sync", "--endpoint", &node.ws()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("3 neurons") && stderr.contains("2 with a validator permit"));

    let snap: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(snap["netuid"], 72);
    assert_eq!(snap["block"], 12345);
    assert_eq!(snap["block_hash"], BLOCK_HASH);
    assert_eq!(snap["stake_source"], "total");
    let ns = snap["neurons"].as_array().unwrap();
    let uids: Vec<u64> = ns.iter().map(|n| n["uid"].as_u64().unwrap()).collect();
    assert_eq!(uids, [0, 1, 2]);
    assert_eq!(ns[0]["hotkey"], ALICE_SS58);
    assert_eq!(ns[1]["hotkey"], BOB_SS58);
    assert_eq!(ns[2]["hotkey"], sv72::keys::ss58_encode(&[7u8; 32], 42));
    let stakes: Vec<f64> = ns.iter().map(|n| n["stake"].as_f64().unwrap()).collect();
    assert!(
        (stakes[0] - 1_234_567.891_234_567).abs() < 1e-6,
        "{stakes:?}"
    );
    assert!((stakes[1] - 42e-9).abs() < 1e-15, "{stakes:?}");
    assert!((stakes[2] - 20e-6).abs() < 1e-12, "{stakes:?}");
    let permits: Vec<bool> = ns
        .iter()
        .map(|n| n["validator_permit"].as_bool().unwrap())
        .collect();
    assert_eq!(permits, [true, true, false]);

    // Both reads pinned to the block, netuid SCALE-encoded as u16 little endian.
    let reqs = node.requests.lock().unwrap().clone();
    let calls: Vec<&Value> = reqs
        .iter()
        .filter(|r| r["method"] == "state_call")
        .collect();
    assert_eq!(calls.len(), 2);
    for c in calls {
        assert_eq!(c["params"][1], "0x4800");
        assert_eq!(c["params"][2], BLOCK_HASH);
    }

    let m = Metagraph::load(&path).unwrap();
    assert_eq!(m.len(), 3);
    let alice_stake = m.admit(Some(ALICE_SS58), 1000.0).unwrap();
    assert!((alice_stake - 1_234_567.891_234_567).abs() < 1e-6);
    assert!(m.admit(Some(BOB_SS58), 1000.0).is_err());
    assert!(m.get("old").is_none());
}

#[test]
fn legacy_rpc_fallback_and_alpha_stake() {
    let node = Node::start(good_chain(true));
    let snap = fetch_snapshot(&opts(&node.ws(), StakeSource::Total), |_| {}).unwrap();
    let total: Vec<f64> = snap.neurons.iter().map(|n| n.stake).collect();
    assert!((total[0] - 1_234_567.891_234_567).abs() < 1e-6, "{total:?}");
    let m = node.methods();
    assert!(
        m.contains(&"neuronInfo_getNeuronsLite".to_string()),
        "{m:?}"
    );
    assert!(
        m.contains(&"subnetInfo_getSubnetState".to_string()),
        "{m:?}"
    );

    let node = Node::start(good_chain(false));
    let snap = fetch_snapshot(&opts(&node.ws(), StakeSource::Alpha), |_| {}).unwrap();
    let alpha: Vec<f64> = snap.neurons.iter().map(|n| n.stake).collect();
    assert!((alpha[0] - 1_000.000_000_005).abs() < 1e-9, "{alpha:?}");
    assert_eq!(alpha[1], 0.0);
    assert!((alpha[2] - 20e-6).abs() < 1e-12);
    assert_eq!(snap.stake_source, StakeSource::Alpha);
    // Alpha needs no subnet state.
    assert!(!node
        .requests
        .lock()
        .unwrap()
        .iter()
        .any(|r| r["params"][0] == "SubnetInfoRuntimeApi_get_subnet_state"));
}

#[test]
fn rpc_errors_name_the_endpoint_and_keep_the_old_snapshot() {
    let node = Node::start(Arc::new(|method: &str, _: &Value| match method {
        "chain_getBlockHash" => Reply::Result(json!(BLOCK_HASH)),
        "chain_getHeader" => Reply::Result(json!({"number": "0x10"})),
        _ => Reply::Error(-32000, "Unable to get neurons lite info: boom"),
    }));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mg.json");
    std::fs::write(&path, OLD).unwrap();
    let p = path.to_str().unwrap();
    let out = sv72(&["metagraph", "sync", "--endpoint", &node.ws(), "--out", p]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&node.ws()), "{stderr}");
    assert!(
        stderr.contains("RPC error -32000") && stderr.contains("boom"),
        "{stderr}"
    );
    assert!(
        stderr.contains("NeuronInfoRuntimeApi_get_neurons_lite"),
        "{stderr}"
    );
    assert_untouched(&path);

    // A truncated neuron list: a decode error naming the neuron and field, file untouched.
    let ns = neurons();
    let full = neurons_payload(&ns, 72);
    let cut = full[..full.len() - 40].to_vec();
    let node = Node::start(chain(cut, subnet_state_payload(&ns, 72), false));
    let out = sv72(&["metagraph", "sync", "--endpoint", &node.ws(), "--out", p]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("truncated SCALE payload"), "{stderr}");
    assert!(stderr.contains("neuron #2 of 3"), "{stderr}");
    assert!(stderr.contains(&node.ws()), "{stderr}");
    assert_untouched(&path);
}

#[test]
fn unreachable_and_non_rpc_answers() {
    // A port nobody listens on.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ep = format!("ws://127.0.0.1:{port}");
    let e = err_of(&opts(&ep, StakeSource::Total));
    assert!(e.contains("cannot reach the subtensor node"), "{e}");
    assert!(
        e.contains(&ep) && e.contains(&format!("http://127.0.0.1:{port}")),
        "{e}"
    );

    let node = Node::start(Arc::new(|_: &str, _: &Value| {
        Reply::Http(502, "bad gateway")
    }));
    let e = err_of(&opts(&node.ws(), StakeSource::Total));
    assert!(e.contains("HTTP 502") && e.contains("bad gateway"), "{e}");
    assert!(e.contains(&node.ws()), "{e}");

    let node = Node::start(Arc::new(|_: &str, _: &Value| Reply::Http(200, "<html>")));
    let e = err_of(&opts(&node.ws(), StakeSource::Total));
    assert!(e.contains("not a JSON-RPC result"), "{e}");

    let e = err_of(&opts("tcp://127.0.0.1:1", StakeSource::Total));
    assert!(e.contains("tcp://127.0.0.1:1"), "{e}");
}

#[test]
fn inconsistent_or_missing_chain_data() {
    let ns = neurons();
    // No neurons: the subnet does not exist.
    let node = Node::start(chain(vec![0], vec![0], false));
    let e = err_of(&opts(&node.ws(), StakeSource::Total));
    assert!(e.contains("no neurons for netuid 72"), "{e}");

    // Neurons but no subnet state.
    let node = Node::start(chain(neurons_payload(&ns, 72), vec![0], false));
    let e = err_of(&opts(&node.ws(), StakeSource::Total));
    assert!(e.contains("no subnet state"), "{e}");

    // Trailing bytes after the list.
    let mut extra = neurons_payload(&ns, 72);
    extra.extend([0, 0]);
    let node = Node::start(chain(extra, subnet_state_payload(&ns, 72), false));
    let e = err_of(&opts(&node.ws(), StakeSource::Total));
    assert!(e.contains("2 unread byte(s)"), "{e}");

    // A subnet state whose hotkey for uid 1 differs from the neuron list.
    let mut other = neurons();
    other[2].hotkey = [9u8; 32];
    let node = Node::start(chain(
        neurons_payload(&ns, 72),
        subnet_state_payload(&other, 72),
        false,
    ));
    let e = err_of(&opts(&node.ws(), StakeSource::Total));
    assert!(e.contains("uid 1") && e.contains("disagree"), "{e}");

    // Neurons of another subnet.
    let node = Node::start(chain(
        neurons_payload(&ns, 71),
        subnet_state_payload(&ns, 71),
        false,
    ));
    let e = err_of(&opts(&node.ws(), StakeSource::Total));
    assert!(e.contains("netuid 71"), "{e}");
}

/// Payloads from `tools/make_metagraph_fixture.py`, with the values bittensor's own decoder
/// (bt-decode) read from them.
#[test]
fn fixture_decodes_as_bittensor_reads_it() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metagraph");
    let read_hex =
        |name: &str| hex::decode(std::fs::read_to_string(dir.join(name)).unwrap().trim()).unwrap();
    let (lite_bytes, state_bytes) = (read_hex("neurons_lite.hex"), read_hex("subnet_state.hex"));
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let want = expected["neurons"].as_array().unwrap();

    let lite = decode_neurons_lite(&lite_bytes).unwrap();
    let state = decode_subnet_state(&state_bytes).unwrap().unwrap();
    assert_eq!(lite.len(), want.len());
    assert_eq!(state.netuid as u64, expected["netuid"].as_u64().unwrap());
    for (n, w) in lite.iter().zip(want) {
        assert_eq!(hex::encode(n.hotkey), w["hotkey_hex"]);
        assert_eq!(hex::encode(n.coldkey), w["coldkey_hex"]);
        assert_eq!(n.uid as u64, w["uid"]);
        assert_eq!(n.netuid as u64, w["netuid"]);
        assert_eq!(n.active, w["active"]);
        assert_eq!(n.axon_info.block, w["axon_block"]);
        assert_eq!(n.axon_info.ip as u64, w["axon_ip"]);
        assert_eq!(n.axon_info.port as u64, w["axon_port"]);
        assert_eq!(n.prometheus_info.port as u64, w["prometheus_port"]);
        let stake: Vec<Value> = n
            .stake
            .iter()
            .map(|(c, a)| json!([hex::encode(c), a]))
            .collect();
        assert_eq!(Value::from(stake), w["stake"]);
        assert_eq!(n.emission, w["emission"]);
        assert_eq!(n.incentive as u64, w["incentive"]);
        assert_eq!(n.consensus as u64, w["consensus"]);
        assert_eq!(n.validator_trust as u64, w["validator_trust"]);
        assert_eq!(n.dividends as u64, w["dividends"]);
        assert_eq!(n.last_update, w["last_update"]);
        assert_eq!(n.validator_permit, w["validator_permit"]);
        assert_eq!(n.pruning_score as u64, w["pruning_score"]);
        let i = n.uid as usize;
        assert_eq!(state.total_stake[i], w["total_stake_rao"]);
        assert_eq!(state.alpha_stake[i], w["alpha_stake_rao"]);
    }

    // End to end: served by a node, written in TAO with bt's SS58 addresses.
    let node = Node::start(chain(lite_bytes, state_bytes, false));
    let snap = fetch_snapshot(&opts(&node.ws(), StakeSource::Total), |_| {}).unwrap();
    for n in &snap.neurons {
        let w = want.iter().find(|w| w["uid"] == n.uid).unwrap();
        assert_eq!(n.hotkey, w["hotkey"].as_str().unwrap());
        let tao = w["total_stake_rao"].as_u64().unwrap() as f64 / 1e9;
        assert!((n.stake - tao).abs() <= tao * 1e-12, "{} vs {tao}", n.stake);
        assert_eq!(n.validator_permit, w["validator_permit"]);
    }
}
