"""Writes tests/fixtures/metagraph/: SCALE payloads of a subtensor node's answers for netuid 72
(`NeuronInfoRuntimeApi_get_neurons_lite` and `SubnetInfoRuntimeApi_get_subnet_state`) and the
values bittensor's own decoder (bt-decode, a parity-scale-codec wrapper) reads back from them.

The payloads are built by hand here; the expected values come from bt_decode, never from the
inputs, so the Rust decoder is checked against bittensor's reading of the same bytes. Layouts:
subtensor `pallets/subtensor/src/rpc_info/neuron_info.rs` (NeuronInfoLite) and `show_subnet.rs`
(SubnetState). bt-decode is not in tools/requirements.txt; use a scratch venv:

    python -m venv /tmp/btvenv && /tmp/btvenv/bin/pip install bt-decode==0.8.0
    /tmp/btvenv/bin/python tools/make_metagraph_fixture.py
"""

import json
import sys
from pathlib import Path

import bt_decode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_fixture import compact, key, neuron_lite as encode_neuron_lite, ss58, vec  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "metagraph"
NETUID = 72


# uid, hotkey, coldkey, permit, [(coldkey, alpha rao)], total stake rao, emission, last_update
NEURONS = [
    (0, key(1), key(2), True, [(key(2), 3_000_000_000_000)], 4_500_123_456_789, 2**40 + 3, 6_000_000),
    (1, key(3), key(4), False, [(key(4), 17)], 17, 0, 63),
    (2, key(5), key(6), True, [(key(6), 2**33), (key(7), 2**14)], 2**62 + 1, 16_383, 16_384),
]


def neuron_lite(uid, hot, cold, permit, stake, emission, last_update) -> bytes:
    return encode_neuron_lite(uid, hot, cold, NETUID, permit, stake, emission, last_update)


def subnet_state() -> bytes:
    ns = sorted(NEURONS)
    b = b"\x01" + compact(NETUID)
    b += vec(n[1] for n in ns) + vec(n[2] for n in ns)
    b += vec(b"\x01" for _ in ns) + vec(bytes([n[3]]) for n in ns)
    b += vec([])  # pruning_score
    b += vec(compact(n[7]) for n in ns)  # last_update
    b += vec(compact(n[6]) for n in ns)  # emission
    for _ in ("dividends", "incentives", "consensus"):
        b += vec(compact(300) for _ in ns)
    b += vec([]) + vec([])  # trust, rank
    b += vec(compact(1000 + n[0]) for n in ns)  # block_at_registration
    b += vec(compact(sum(a for _, a in n[4])) for n in ns)  # alpha_stake
    b += vec(compact(5) for _ in ns)  # tao_stake
    b += vec(compact(n[5]) for n in ns)  # total_stake
    b += vec(vec(compact(x) for x in (1, 2**35)) for _ in ns)  # emission_history
    return b


def subnet_state_registry():
    types = []

    def add(d, path=()):
        types.append({"id": len(types), "type": {"path": list(path), "params": [], "def": d, "docs": []}})
        return len(types) - 1

    u8, bl = add({"primitive": "u8"}), add({"primitive": "bool"})
    u16, u64 = add({"primitive": "u16"}), add({"primitive": "u64"})
    arr = add({"array": {"len": 32, "type": u8}})
    acc = add({"composite": {"fields": [{"type": arr}]}}, ["sp_core", "crypto", "AccountId32"])
    c16, c64 = add({"compact": {"type": u16}}), add({"compact": {"type": u64}})
    seq = lambda t: add({"sequence": {"type": t}})  # noqa: E731
    vacc, vb, vc16, vc64 = seq(acc), seq(bl), seq(c16), seq(c64)
    vvc64 = seq(vc64)
    fields = [
        ("netuid", c16), ("hotkeys", vacc), ("coldkeys", vacc), ("active", vb),
        ("validator_permit", vb), ("pruning_score", vc16), ("last_update", vc64),
        ("emission", vc64), ("dividends", vc16), ("incentives", vc16), ("consensus", vc16),
        ("trust", vc16), ("rank", vc16), ("block_at_registration", vc64), ("alpha_stake", vc64),
        ("tao_stake", vc64), ("total_stake", vc64), ("emission_history", vvc64),
    ]
    ss = add({"composite": {"fields": [{"name": n, "type": t} for n, t in fields]}}, ["SubnetState"])
    opt = add({"variant": {"variants": [
        {"name": "None", "fields": [], "index": 0, "docs": []},
        {"name": "Some", "fields": [{"type": ss}], "index": 1, "docs": []},
    ]}}, ["Option"])
    return bt_decode.PortableRegistry.from_json(json.dumps({"types": types})), f"scale_info::{opt}"


def acc_bytes(a) -> bytes:
    # bt_decode gives an AccountId32 as a 1-tuple holding 32 ints.
    while isinstance(a, (tuple, list)) and len(a) == 1:
        a = a[0]
    return bytes(a)


def main() -> None:
    lite = vec(neuron_lite(n[0], n[1], n[2], n[3], n[4], n[6], n[7]) for n in (NEURONS[2], NEURONS[0], NEURONS[1]))
    state = subnet_state()

    decoded = bt_decode.NeuronInfoLite.decode_vec(lite)
    reg, opt = subnet_state_registry()
    st = bt_decode.decode(opt, reg, state)
    if isinstance(st, dict) and "Some" in st:
        st = st["Some"]
    st = st[0] if isinstance(st, tuple) else st

    neurons = []
    for d in decoded:
        hot = bytes(d.hotkey)
        i = d.uid
        assert acc_bytes(st["hotkeys"][i]) == hot
        neurons.append({
            "hotkey_hex": hot.hex(),
            "hotkey": ss58(hot),
            "coldkey_hex": bytes(d.coldkey).hex(),
            "uid": d.uid,
            "netuid": d.netuid,
            "active": d.active,
            "axon_block": d.axon_info.block,
            "axon_ip": d.axon_info.ip,
            "axon_port": d.axon_info.port,
            "prometheus_port": d.prometheus_info.port,
            "stake": [[bytes(c).hex(), a] for c, a in d.stake],
            "emission": d.emission,
            "incentive": d.incentive,
            "consensus": d.consensus,
            "validator_trust": d.validator_trust,
            "dividends": d.dividends,
            "last_update": d.last_update,
            "validator_permit": d.validator_permit,
            "pruning_score": d.pruning_score,
            # bittensor's metagraph.S: SubnetState.total_stake in TAO.
            "total_stake_rao": st["total_stake"][i],
            "alpha_stake_rao": st["alpha_stake"][i],
        })
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "neurons_lite.hex").write_text(lite.hex() + "\n")
    (OUT / "subnet_state.hex").write_text(state.hex() + "\n")
    meta = {
        "netuid": st["netuid"],
        "decoder": f"bt-decode {getattr(bt_decode, '__version__', '0.8.0')}",
        "neurons": neurons,
    }
    (OUT / "expected.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {len(lite)} + {len(state)} bytes, {len(neurons)} neurons to {OUT}")


if __name__ == "__main__":
    main()
