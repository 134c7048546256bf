//! `sv72 econ`: the runtime-API answers decoded as bittensor decodes them (fixture from
//! `tools/make_econ_fixture.py`), the arithmetic on hand-computed cases, a stand-in node and a
//! stand-in price endpoint on 127.0.0.1, and errors that name what is bad or missing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use sv72::chain::scale::{
    decode_dynamic_info, decode_neurons_lite, decode_subnet_info, decode_u64,
};
use sv72::chain::{RawSubnetRead, ReadOptions, SubnetRead};
use sv72::config::EconConfig;
use sv72::econ::{self, compute, prices, Costs, EconOptions, Source, TaoUsd, Target};
use sv72::keys::ss58_encode;

use crate::common;
use crate::common::node::{hex0x, Handler, Node, Reply, BLOCK_HASH};

fn fixture_hex(name: &str) -> String {
    let p = common::fixture(&format!("econ/{name}.hex"));
    std::fs::read_to_string(&p).unwrap().trim().to_string()
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    hex::decode(fixture_hex(name)).unwrap()
}

fn expected() -> Value {
    let p = common::fixture("econ/expected.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn raw() -> RawSubnetRead {
    RawSubnetRead {
        netuid: 72,
        block: 12345,
        block_hash: BLOCK_HASH.into(),
        endpoint: "fixture".into(),
        read_at: Utc::now(),
        dynamic_info: format!("0x{}", fixture_hex("dynamic_info")),
        subnet_info: format!("0x{}", fixture_hex("subnet_info")),
        alpha_price: Some(format!("0x{}", fixture_hex("alpha_price"))),
        no_swap_price: None,
        neurons_lite: format!("0x{}", fixture_hex("neurons_lite")),
    }
}

fn read() -> SubnetRead {
    raw().decode("fixture").unwrap()
}

fn usd(p: f64) -> TaoUsd {
    TaoUsd {
        usd: p,
        source: "test".into(),
        at: Utc::now(),
    }
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-9 * b.abs().max(1.0),
        "{what}: {a} != {b}"
    );
}

/// Costs of $4,813.82304526 a day: serving 4800, training 10, generation 1, storage 2 and the
/// registration burn 0.123456789 TAO × $400 / 60 = 0.82304526.
fn costs_cfg() -> EconConfig {
    EconConfig {
        serving_usd_per_hour: 200.0,
        training_hours_per_cycle: 60.0,
        training_usd_per_hour: 10.0,
        images_per_cycle: 6000.0,
        generation_usd_per_image: 0.01,
        storage_usd_per_month: 2.0 * 365.0 / 12.0,
        cycle_days: 60.0,
        registration_days: 60.0,
        ..EconConfig::default()
    }
}

const COST_SETS: [&str; 8] = [
    "econ.serving_usd_per_hour=200",
    "econ.training_hours_per_cycle=60",
    "econ.training_usd_per_hour=10",
    "econ.images_per_cycle=6000",
    "econ.generation_usd_per_image=0.01",
    "econ.storage_usd_per_month=60.833333333333336",
    "econ.cycle_days=60",
    "econ.registration_days=60",
];

#[test]
fn fixture_decodes_as_bittensor_reads_it() {
    let want = expected();
    let d = decode_dynamic_info(&fixture_bytes("dynamic_info"))
        .unwrap()
        .unwrap();
    let w = &want["dynamic_info"];
    assert_eq!(d.netuid as u64, want["netuid"]);
    assert_eq!(d.subnet_name, w["subnet_name"]);
    assert_eq!(d.token_symbol, w["symbol"]);
    assert_eq!(ss58_encode(&d.owner_hotkey, 42), w["owner_hotkey"]);
    assert_eq!(ss58_encode(&d.owner_coldkey, 42), w["owner_coldkey"]);
    assert_eq!(d.tempo as u64, w["tempo"]);
    assert_eq!(d.last_step, w["last_step"]);
    assert_eq!(d.blocks_since_last_step, w["blocks_since_last_step"]);
    assert_eq!(d.alpha_in, w["alpha_in_rao"]);
    assert_eq!(d.alpha_out, w["alpha_out_rao"]);
    assert_eq!(d.tao_in, w["tao_in_rao"]);
    assert_eq!(d.alpha_out_emission, w["alpha_out_emission_rao"]);
    assert_eq!(d.alpha_in_emission, w["alpha_in_emission_rao"]);
    assert_eq!(d.tao_in_emission, w["tao_in_emission_rao"]);
    assert_eq!(d.pending_alpha_emission, w["pending_alpha_emission_rao"]);
    assert_eq!(d.pending_root_emission, w["pending_root_emission_rao"]);
    assert_eq!(d.subnet_volume.to_string(), w["subnet_volume_rao"]);
    assert_eq!(d.network_registered_at, w["network_registered_at"]);
    let id = d.subnet_identity.as_ref().unwrap();
    assert_eq!(id.subnet_name, w["identity_subnet_name"]);
    assert_eq!(id.github_repo, w["identity_github_repo"]);
    assert_eq!(id.description, w["identity_description"]);
    close(
        d.moving_price(),
        w["moving_price"].as_f64().unwrap(),
        "moving",
    );

    let price = decode_u64(&fixture_bytes("alpha_price"), "price").unwrap();
    close(price as f64 / 1e9, w["price_tao"].as_f64().unwrap(), "swap");

    let info = decode_subnet_info(&fixture_bytes("subnet_info"))
        .unwrap()
        .unwrap();
    let w = &want["subnet_info"];
    assert_eq!(info.netuid as u64, w["netuid"]);
    assert_eq!(info.burn, w["burn_rao"]);
    assert_eq!(info.tempo as u64, w["tempo"]);
    assert_eq!(info.immunity_period as u64, w["immunity_period"]);
    assert_eq!(info.subnetwork_n as u64, w["subnetwork_n"]);
    assert_eq!(info.max_allowed_uids as u64, w["max_n"]);
    assert_eq!(ss58_encode(&info.owner, 42), w["owner"]);

    let lite = decode_neurons_lite(&fixture_bytes("neurons_lite")).unwrap();
    let w = want["neurons"].as_array().unwrap();
    assert_eq!(lite.len(), w.len());
    for (n, w) in lite.iter().zip(w) {
        assert_eq!(n.uid as u64, w["uid"]);
        assert_eq!(ss58_encode(&n.hotkey, 42), w["hotkey"]);
        assert_eq!(ss58_encode(&n.coldkey, 42), w["coldkey"]);
        assert_eq!(n.active, w["active"]);
        assert_eq!(n.validator_permit, w["validator_permit"]);
        assert_eq!(n.incentive as u64, w["incentive_u16"]);
        assert_eq!(n.dividends as u64, w["dividends_u16"]);
        assert_eq!(n.emission, w["emission_rao"]);
        assert_eq!(n.last_update, w["last_update"]);
    }

    // Priced as bittensor prices: the swap price, and tao_in / alpha_in without a swap API.
    let r = read();
    let p = prices(&r, usd(400.0)).unwrap();
    assert_eq!(p.alpha_source, "swap");
    let want_d = &want["dynamic_info"];
    close(p.alpha_tao, want_d["price_tao"].as_f64().unwrap(), "price");
    assert!((p.reserve_ratio_tao - want_d["reserve_price_tao"].as_f64().unwrap()).abs() < 1e-9);
    // Incentive as bittensor's float (u16 / 65535).
    let rep = compute(&r, p, &Costs::from(&costs_cfg()), Some(&Target::Uid(1))).unwrap();
    close(
        rep.target.unwrap().incentive,
        want["neurons"][1]["incentive"].as_f64().unwrap(),
        "incentive",
    );
}

/// The fixture's miners (no dividends) by emission: uid 1 (45 alpha an epoch), uid 2 (22.5),
/// uid 4 (22.498626708, a permit holder that does not validate), uid 3 (0); uid 0 validates.
/// Tempo 360: 7200 / 361 = 19.944598… epochs a day. Alpha 0.031250001 TAO, TAO $400.
#[test]
fn arithmetic_on_a_hand_computed_case() {
    let r = read();
    let p = prices(&r, usd(400.0)).unwrap();
    close(p.alpha_usd, 12.5000004, "alpha usd");
    let costs = Costs::from(&costs_cfg());
    let rep = compute(
        &r,
        p,
        &costs,
        Some(&Target::Hotkey(ss58_encode(&r.neurons[4].hotkey, 42))),
    )
    .unwrap();
    close(rep.epochs_per_day, 19.94459833795014, "epochs/day");
    let c = &rep.costs_per_day;
    close(c.serving, 4800.0, "serving");
    close(c.training, 10.0, "training");
    close(c.generation, 1.0, "generation");
    close(c.storage, 2.0, "storage");
    close(c.registration, 0.82304526, "registration");
    close(c.total, 4813.82304526, "total");
    close(rep.registration_burn_tao, 0.123456789, "burn");
    assert_eq!((rep.miners, rep.validators, rep.earning_miners), (4, 1, 3));

    // 4 miners: top 1/5/10/25% are rank 1, top 50% rank 2.
    let ranks: Vec<usize> = rep.tiers.iter().map(|t| t.earner.rank.unwrap()).collect();
    assert_eq!(ranks, [1, 1, 1, 1, 2]);
    let top = &rep.tiers[0].earner;
    assert_eq!(top.uid, 1);
    close(top.alpha_day, 897.5069252077562, "alpha/day");
    close(top.tao_day, 28.047092310249308, "tao/day");
    close(top.usd_day, 11218.836924099722, "usd/day");
    close(top.net_usd_day, 6405.013878839722, "net/day");
    close(
        top.usd_month,
        11218.836924099722 * 365.0 / 12.0,
        "usd/month",
    );
    let half = &rep.tiers[4].earner;
    assert_eq!(half.uid, 2);
    close(half.usd_day, 5609.418462049861, "rank 2");

    let mine = rep.target.as_ref().unwrap();
    assert_eq!(
        (mine.uid, mine.rank, mine.role.as_str()),
        (4, Some(3), "miner")
    );
    close(mine.usd_day, 5609.076090072146, "uid 4");

    // uid 1, 2 and 4 cover $4,813.82 a day; uid 3 earns nothing.
    assert_eq!(rep.break_even_rank, 3);
    let be: Vec<usize> = rep.sensitivity.iter().map(|s| s.break_even_rank).collect();
    assert_eq!(be, [1, 1, 3, 3, 3]);
    let half_price = &rep.sensitivity[0];
    close(half_price.alpha_tao, 0.0156250005, "half price");
    close(
        half_price.tier_net_usd_day[0],
        795.5954167898608,
        "-50% top",
    );
    close(
        half_price.tier_net_usd_day[4],
        -2009.1138142350696,
        "-50% rank 2",
    );
    assert!(rep
        .verdict
        .starts_with("Mining pays from rank <= 3 of 4 miners (top 75%)"));
    assert!(
        rep.verdict
            .contains("UID 4 (miner, rank 3) nets $795.25/day"),
        "{}",
        rep.verdict
    );
    assert_eq!(rep.miners_usd_day.len(), 4);
    assert_eq!(rep.miners_usd_day[3], 0.0);

    // A validator is reported as such, without a miner rank.
    let p = prices(&r, usd(400.0)).unwrap();
    let v = compute(&r, p, &costs, Some(&Target::Uid(0))).unwrap();
    let v = v.target.unwrap();
    assert_eq!((v.role.as_str(), v.rank), ("validator", None));
    close(v.alpha_day, 90.0 * 7200.0 / 361.0, "validator alpha/day");

    // At $40 a TAO nothing pays.
    let p = prices(&r, usd(40.0)).unwrap();
    let low = compute(&r, p, &costs, None).unwrap();
    assert_eq!(low.break_even_rank, 0);
    assert!(
        low.verdict.starts_with("Mining does not pay at any rank")
            && low.verdict.contains("$1121.88/day"),
        "{}",
        low.verdict
    );

    // An unknown UID is an error naming it.
    let p = prices(&r, usd(400.0)).unwrap();
    let e = compute(&r, p, &costs, Some(&Target::Uid(77))).unwrap_err();
    assert!(
        format!("{e:#}").contains("UID 77 is not registered on netuid 72"),
        "{e:#}"
    );
    assert_eq!(econ::tier_rank(10.0, 256), 26);
    assert_eq!(econ::tier_rank(1.0, 256), 3);
    assert_eq!(econ::tier_rank(50.0, 1), 1);
}

/// A node serving the fixture; `price` answers `SwapRuntimeApi_current_alpha_price`.
fn econ_node(dynamic: Vec<u8>, price: PriceApi) -> Arc<Handler> {
    let (info, lite, p) = (
        fixture_bytes("subnet_info"),
        fixture_bytes("neurons_lite"),
        fixture_bytes("alpha_price"),
    );
    Arc::new(move |method: &str, params: &Value| match method {
        "chain_getBlockHash" => Reply::Result(json!(BLOCK_HASH)),
        "chain_getHeader" => Reply::Result(json!({"number": "0x3039"})),
        "state_call" => match params[0].as_str() {
            Some("SubnetInfoRuntimeApi_get_dynamic_info") => Reply::Result(json!(hex0x(&dynamic))),
            Some("SubnetInfoRuntimeApi_get_subnet_info_v2") => Reply::Result(json!(hex0x(&info))),
            Some("NeuronInfoRuntimeApi_get_neurons_lite") => Reply::Result(json!(hex0x(&lite))),
            Some("SwapRuntimeApi_current_alpha_price") => match price {
                PriceApi::Ok => Reply::Result(json!(hex0x(&p))),
                PriceApi::Missing => Reply::Error(
                    4003,
                    "Client error: Execution failed: Other: Exported method \
                     SwapRuntimeApi_current_alpha_price is not found",
                ),
                PriceApi::Trap => Reply::Error(4003, "Execution failed: wasm trap: unreachable"),
            },
            _ => Reply::Error(4003, "Exported method not found"),
        },
        "get /price" => Reply::Body(200, r#"{"bittensor": {"usd": 400}}"#.into()),
        "get /quoted" => Reply::Body(200, r#"{"data": {"price": "412.5"}}"#.into()),
        "get /down" => Reply::Body(503, "maintenance".into()),
        "get /zero" => Reply::Body(200, r#"{"bittensor": {"usd": 0}}"#.into()),
        _ => Reply::Error(-32601, "Method not found"),
    })
}

#[derive(Clone, Copy)]
enum PriceApi {
    Ok,
    Missing,
    Trap,
}

fn sv72_in(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut all: Vec<&str> = Vec::new();
    for s in COST_SETS {
        all.extend(["--set", s]);
    }
    all.extend(args);
    std::process::Command::new(env!("CARGO_BIN_EXE_sv72"))
        .current_dir(dir)
        .env("SV72_NO_PROGRESS", "1")
        .env_remove("SV72_SUBTENSOR")
        .args(&all)
        .output()
        .unwrap()
}

fn png_size(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap();
    (img.width(), img.height())
}

#[test]
fn cli_reads_a_node_writes_the_report_and_remakes_it_offline() {
    let node = Node::start(econ_node(fixture_bytes("dynamic_info"), PriceApi::Ok));
    let dir = tempfile::tempdir().unwrap();
    let ws = node.ws();
    let args = [
        "econ",
        "--node",
        &ws,
        "--tao-usd",
        "400",
        "--uid",
        "4",
        "--out",
        "rep",
        "--snapshot",
        "snap.json",
        "--json",
    ];
    let out = sv72_in(dir.path(), &args);
    let stdout = common::stdout_ok(&out, &args);
    let rep: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rep["block"], 12345);
    assert_eq!(rep["block_hash"], BLOCK_HASH);
    assert_eq!(rep["break_even_rank"], 3);
    assert_eq!(rep["target"]["rank"], 3);
    assert_eq!(rep["prices"]["tao_usd"]["source"], "--tao-usd");
    assert!((rep["costs_per_day"]["total"].as_f64().unwrap() - 4813.82304526).abs() < 1e-6);

    // Every runtime call pinned to the block read, netuid 72 as u16 little endian.
    let reqs = node.requests.lock().unwrap().clone();
    let calls: Vec<&Value> = reqs
        .iter()
        .filter(|r| r["method"] == "state_call")
        .collect();
    assert_eq!(calls.len(), 4);
    for c in calls {
        assert_eq!(c["params"][1], "0x4800");
        assert_eq!(c["params"][2], BLOCK_HASH);
    }

    let md = std::fs::read_to_string(dir.path().join("rep/report.md")).unwrap();
    assert!(md.contains("at block 12345"), "{md}");
    assert!(
        md.contains("Mining pays from rank <= 3 of 4 miners"),
        "{md}"
    );
    assert!(md.contains("| **yours** (rank 3) | 4 |"), "{md}");
    assert!(md.contains("| -50% | 0.015625 | 1 |"), "{md}");
    let json_file: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("rep/report.json")).unwrap())
            .unwrap();
    assert_eq!(json_file, rep);
    assert_eq!(
        png_size(&dir.path().join("rep/revenue_by_rank.png")),
        (640, 480)
    );

    // Offline, from the snapshot, with the node gone: the same report.
    drop(node);
    let args = [
        "econ",
        "--from-snapshot",
        "snap.json",
        "--uid",
        "4",
        "--out",
        "again",
        "--json",
    ];
    let out = sv72_in(dir.path(), &args);
    let again: Value = serde_json::from_str(&common::stdout_ok(&out, &args)).unwrap();
    assert_eq!(again, rep);

    // The summary names the verdict and the tiers.
    let args = ["econ", "--from-snapshot", "snap.json", "--out", "again"];
    let out = sv72_in(dir.path(), &args);
    let text = common::stdout_ok(&out, &args);
    assert!(text.starts_with("Mining pays from rank <= 3"), "{text}");
    assert!(text.contains("top 50% (rank   2)"), "{text}");
}

fn node_opts(node: &Node) -> EconOptions {
    EconOptions {
        source: Source::Node(ReadOptions {
            endpoint: node.ws(),
            netuid: 72,
            timeout: Duration::from_secs(10),
        }),
        tao_usd: None,
        target: None,
        save_snapshot: None,
        out_dir: None,
        timeout: Duration::from_secs(10),
    }
}

fn run_err(opts: &EconOptions, cfg: &EconConfig) -> String {
    format!("{:#}", econ::run(opts, cfg, |_| {}).unwrap_err())
}

#[test]
fn tao_price_from_an_endpoint_and_its_errors() {
    let node = Node::start(econ_node(fixture_bytes("dynamic_info"), PriceApi::Ok));
    let base = format!("http://127.0.0.1:{}", node.port);
    let mut cfg = costs_cfg();
    cfg.price_url = Some(format!("{base}/price"));
    let rep = econ::run(&node_opts(&node), &cfg, |_| {}).unwrap();
    assert_eq!(rep.prices.tao_usd.usd, 400.0);
    assert!(rep
        .prices
        .tao_usd
        .source
        .contains("/price at /bittensor/usd"));
    assert_eq!(rep.break_even_rank, 3);

    // A quoted number at another pointer.
    cfg.price_url = Some(format!("{base}/quoted"));
    cfg.price_pointer = "/data/price".into();
    let rep = econ::run(&node_opts(&node), &cfg, |_| {}).unwrap();
    assert_eq!(rep.prices.tao_usd.usd, 412.5);

    // econ.tao_usd beats the endpoint, --tao-usd beats both.
    cfg.tao_usd = Some(300.0);
    let rep = econ::run(&node_opts(&node), &cfg, |_| {}).unwrap();
    assert_eq!(
        (rep.prices.tao_usd.usd, rep.prices.tao_usd.source.as_str()),
        (300.0, "econ.tao_usd")
    );
    let mut o = node_opts(&node);
    o.tao_usd = Some(350.0);
    assert_eq!(
        econ::run(&o, &cfg, |_| {}).unwrap().prices.tao_usd.usd,
        350.0
    );
    cfg.tao_usd = None;

    cfg.price_pointer = "/bittensor/eur".into();
    let e = run_err(&node_opts(&node), &cfg);
    assert!(
        e.contains("nothing at econ.price_pointer \"/bittensor/eur\""),
        "{e}"
    );
    cfg.price_url = Some(format!("{base}/down"));
    let e = run_err(&node_opts(&node), &cfg);
    assert!(
        e.contains("HTTP 503") && e.contains("maintenance") && e.contains("/down"),
        "{e}"
    );
    cfg.price_url = Some(format!("{base}/zero"));
    cfg.price_pointer = "/bittensor/usd".into();
    let e = run_err(&node_opts(&node), &cfg);
    assert!(e.contains("not a positive price"), "{e}");
    cfg.price_url = None;
    let e = run_err(&node_opts(&node), &cfg);
    assert!(
        e.contains("--tao-usd") && e.contains("econ.price_url"),
        "{e}"
    );

    // Without a price the chain read is still saved; a re-run with a price works offline.
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("s.json");
    let mut o = node_opts(&node);
    o.save_snapshot = Some(snap.clone());
    assert!(run_err(&o, &cfg).contains("--tao-usd"));
    drop(node);
    let o = EconOptions {
        source: Source::Snapshot(snap),
        tao_usd: Some(400.0),
        ..o
    };
    assert_eq!(econ::run(&o, &cfg, |_| {}).unwrap().break_even_rank, 3);
}

#[test]
fn runtime_without_a_swap_api_prices_at_the_reserve_ratio() {
    let node = Node::start(econ_node(fixture_bytes("dynamic_info"), PriceApi::Missing));
    let mut o = node_opts(&node);
    o.tao_usd = Some(400.0);
    let rep = econ::run(&o, &costs_cfg(), |_| {}).unwrap();
    assert_eq!(rep.prices.alpha_source, "reserve ratio");
    close(
        rep.prices.alpha_tao,
        41_123_456_789_012.0 / 1_234_567_000_000_123.0,
        "reserve",
    );
    assert!(rep
        .assumptions
        .iter()
        .any(|a| a.contains("reserve ratio") && a.contains("not found")));

    // Any other refusal is an error, not a silent fallback.
    let node = Node::start(econ_node(fixture_bytes("dynamic_info"), PriceApi::Trap));
    let mut o = node_opts(&node);
    o.tao_usd = Some(400.0);
    let e = run_err(&o, &costs_cfg());
    assert!(
        e.contains("SwapRuntimeApi_current_alpha_price") && e.contains("wasm trap"),
        "{e}"
    );
}

#[test]
fn bad_or_missing_fields_are_named() {
    // A truncated dynamic info names the field it ran out in.
    let full = fixture_bytes("dynamic_info");
    let node = Node::start(econ_node(full[..full.len() - 8].to_vec(), PriceApi::Ok));
    let mut o = node_opts(&node);
    o.tao_usd = Some(400.0);
    let e = run_err(&o, &costs_cfg());
    assert!(
        e.contains("truncated SCALE payload") && e.contains("moving_price"),
        "{e}"
    );
    assert!(e.contains("DynamicInfo") && e.contains(&node.ws()), "{e}");

    // Extra bytes are an error too (a changed layout, not shifted numbers).
    let mut extra = full.clone();
    extra.push(0);
    let node = Node::start(econ_node(extra, PriceApi::Ok));
    let mut o = node_opts(&node);
    o.tao_usd = Some(400.0);
    let e = run_err(&o, &costs_cfg());
    assert!(e.contains("1 unread byte(s)"), "{e}");

    // No such subnet.
    let node = Node::start(econ_node(vec![0], PriceApi::Ok));
    let mut o = node_opts(&node);
    o.tao_usd = Some(400.0);
    let e = run_err(&o, &costs_cfg());
    assert!(
        e.contains("no dynamic info for netuid 72 at block 12345"),
        "{e}"
    );

    // Snapshot fields: missing, not hex, wrong format.
    let dir = tempfile::tempdir().unwrap();
    let good = serde_json::to_value(econ::Snapshot {
        format: econ::SNAPSHOT_FORMAT.into(),
        chain: raw(),
        tao_usd: Some(usd(400.0)),
    })
    .unwrap();
    let check = |v: &Value, needle: &str| {
        let p = dir.path().join("s.json");
        std::fs::write(&p, v.to_string()).unwrap();
        let o = EconOptions {
            source: Source::Snapshot(p),
            ..node_opts(&node)
        };
        let e = run_err(&o, &costs_cfg());
        assert!(e.contains(needle), "wanted {needle:?} in: {e}");
    };
    let mut v = good.clone();
    v["chain"].as_object_mut().unwrap().remove("neurons_lite");
    check(&v, "missing field `neurons_lite`");
    let mut v = good.clone();
    v["chain"]["subnet_info"] = json!("0xzz");
    check(&v, "`subnet_info` is not 0x-prefixed hex");
    let mut v = good.clone();
    v["chain"]["block"] = json!("twelve");
    check(&v, "field `chain.block`");
    let mut v = good.clone();
    v["format"] = json!("other/9");
    check(&v, "is not \"sv72-econ-snapshot/1\"");
    // … while the untouched snapshot makes a report.
    let p = dir.path().join("good.json");
    std::fs::write(&p, good.to_string()).unwrap();
    let o = EconOptions {
        source: Source::Snapshot(p),
        ..node_opts(&node)
    };
    assert_eq!(
        econ::run(&o, &costs_cfg(), |_| {}).unwrap().break_even_rank,
        3
    );
}

#[test]
fn plot_has_title_axes_and_the_cost_line() {
    let r = read();
    let p = prices(&r, usd(400.0)).unwrap();
    let rep = compute(&r, p, &Costs::from(&costs_cfg()), Some(&Target::Uid(4))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    econ::report::write(dir.path(), &rep).unwrap();
    let img = image::open(dir.path().join(econ::report::PLOT))
        .unwrap()
        .to_rgb8();
    assert_eq!(img.dimensions(), (640, 480));
    let count = |x0: u32, y0: u32, x1: u32, y1: u32, f: &dyn Fn(&image::Rgb<u8>) -> bool| {
        (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .filter(|&(x, y)| f(img.get_pixel(x, y)))
            .count()
    };
    let ink = |p: &image::Rgb<u8>| p.0.iter().all(|&c| c < 90);
    let near =
        |c: [u8; 3]| move |p: &image::Rgb<u8>| p.0.iter().zip(c).all(|(&a, b)| a.abs_diff(b) < 12);
    assert!(count(0, 0, 640, 40, &ink) > 150, "no title");
    assert!(count(0, 64, 70, 430, &ink) > 150, "no y-axis labels");
    assert!(count(70, 430, 640, 480, &ink) > 200, "no x-axis labels");
    // The cost line ($4,813.82 of a $12,340.72 range) runs across the chart in red; the
    // revenue line in blue; the target's dot in orange.
    assert!(
        count(80, 64, 630, 430, &near([214, 39, 40])) > 400,
        "no cost line"
    );
    assert!(
        count(80, 64, 630, 430, &near([31, 119, 180])) > 300,
        "no revenue line"
    );
    assert!(
        count(80, 64, 630, 430, &near([255, 127, 14])) > 40,
        "no target dot"
    );
}

#[test]
fn econ_config_is_checked() {
    let e = sv72::config::Config::load(None, &["econ.cycle_days=0".into()]).unwrap_err();
    assert!(format!("{e:#}").contains("econ.cycle_days"), "{e:#}");
    let e = sv72::config::Config::load(None, &["econ.serving_usd_per_hour=-1".into()]).unwrap_err();
    assert!(
        format!("{e:#}").contains("econ.serving_usd_per_hour"),
        "{e:#}"
    );
    let e = sv72::config::Config::load(None, &["econ.tao_usd=0".into()]).unwrap_err();
    assert!(format!("{e:#}").contains("econ.tao_usd"), "{e:#}");
    let e = sv72::config::Config::load(None, &["econ.price_urll=x".into()]).unwrap_err();
    assert!(format!("{e:#}").contains("price_urll"), "{e:#}");
}
