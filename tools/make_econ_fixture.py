"""Writes tests/fixtures/econ/: SCALE payloads of a subtensor node's answers for netuid 72 that
`sv72 econ` reads, and the values bittensor 10.2 reads back from them:

* `SubnetInfoRuntimeApi_get_dynamic_info` -> `Option<DynamicInfo>` (pool reserves, tempo,
  emissions, moving price; subtensor `pallets/subtensor/src/rpc_info/dynamic_info.rs`);
* `SubnetInfoRuntimeApi_get_subnet_info_v2` -> `Option<SubnetInfov2>` (burn = registration cost,
  immunity period; `rpc_info/subnet_info.rs`);
* `SwapRuntimeApi_current_alpha_price` -> `u64` (rao of TAO per alpha; `pallets/swap/runtime-api`);
* `NeuronInfoRuntimeApi_get_neurons_lite` -> `Vec<NeuronInfoLite>` (incentive, emission,
  dividends, permit per UID).

The payloads are built by hand (tools/scale_fixture.py); the expected values come from bittensor's
own decoding path, never from the inputs: bittensor 10.2.0 reads a `state_call` answer through
async-substrate-interface 1.6, which decodes it with `bt_decode.decode` against the runtime's
scale-info registry (here a registry of the same runtime types), and then builds its
`DynamicInfo`, `SubnetInfo` and `NeuronInfoLite` with their own `from_dict`. bt_decode ignores
trailing bytes, so each payload less its last byte must fail to decode: the layout uses every byte
(the Rust decoder also insists on that).
bittensor is not in tools/requirements.txt; use a scratch venv with the versions bittensor 10.2.0
pins (pip otherwise picks async-substrate-interface 2.x, which bittensor 10.2.0 cannot import):

    python -m venv /work/venvs/econ
    /work/venvs/econ/bin/pip install bittensor==10.2.0 async-substrate-interface==1.6.4 scalecodec==1.2.12
    /work/venvs/econ/bin/python tools/make_econ_fixture.py
"""

import json
import sys
from pathlib import Path

from bittensor.core.chain_data.dynamic_info import DynamicInfo
from bittensor.core.chain_data.neuron_info_lite import NeuronInfoLite
from bittensor.core.chain_data.subnet_info import SubnetInfo
from bittensor.utils.balance import Balance
import bt_decode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_fixture import compact, key, neuron_lite, ss58, vec  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "econ"
NETUID = 72
I96F32_ONE = 1 << 32

# ---------- payloads ----------


def text(s: str) -> bytes:
    """`Vec<Compact<u8>>` (names in DynamicInfo): each UTF-8 byte as a compact integer."""
    return vec(compact(b) for b in s.encode())


def raw(s: str) -> bytes:
    """`Vec<u8>`."""
    return vec(bytes([b]) for b in s.encode())


IDENTITY = ["StreetVision", "https://github.com/natixnetwork/streetvision-subnet", "ops@example.org",
            "https://example.org", "", "Roadwork detection from dash-cam images", "", "fixture"]

# Pool: 41,123.456789012 TAO against 1,234,567.000000123 alpha; the swap price differs from the
# reserve ratio (a balancer pool with unequal weights), as on chain.
TAO_IN = 41_123_456_789_012
ALPHA_IN = 1_234_567_000_000_123
PRICE_RAO = 31_250_001  # 0.031250001 TAO per alpha
MOVING_PRICE_BITS = int(0.0298 * I96F32_ONE)
TEMPO = 360
BURN = 123_456_789  # 0.123456789 TAO


def dynamic_info() -> bytes:
    b = b"\x01" + compact(NETUID) + key(40) + key(41)
    b += text("StreetVision") + text("ⲁ")  # a 3-byte symbol: compacts of 2 bytes each
    b += compact(TEMPO) + compact(7_000_000) + compact(123)  # tempo, last_step, since
    b += compact(0)  # emission (no longer computed, 0)
    b += compact(ALPHA_IN) + compact(2_500_000_000_000_000) + compact(TAO_IN)
    b += compact(1_000_000_000) + compact(400_000_000) + compact(12_500_000)  # per-block emissions
    b += compact(5_000_000_000_000) + compact(0)  # pending alpha, pending root
    b += compact(2**70 + 5)  # subnet_volume (u128)
    b += compact(4_000_000)  # network_registered_at
    b += b"\x01" + b"".join(raw(s) for s in IDENTITY)
    b += MOVING_PRICE_BITS.to_bytes(16, "little", signed=True)
    return b


def subnet_info_v2() -> bytes:
    b = b"\x01" + compact(NETUID) + compact(10) + compact(32_767)  # netuid, rho, kappa
    b += compact(10_000_000)  # difficulty
    b += compact(5000) + compact(64) + compact(1) + compact(65535) + compact(50)
    b += compact(256) + compact(256)  # subnetwork_n, max_allowed_uids
    b += compact(123) + compact(TEMPO) + compact(0)  # blocks_since_last_step, tempo, modality
    b += vec([(0).to_bytes(2, "little") + (1000).to_bytes(2, "little")])  # network_connect
    b += compact(0) + compact(BURN) + key(41)  # emission_value, burn, owner
    b += b"\x00"  # identity: None
    return b


# uid, hotkey seed, permit, incentive (u16), dividends (u16), emission (rao per epoch)
NEURONS = [
    (0, 10, True, 0, 40_000, 90_000_000_000),  # a validator: dividends, no incentive
    (1, 11, False, 32_768, 0, 45_000_000_000),
    (2, 12, False, 16_384, 0, 22_500_000_000),
    (3, 13, False, 0, 0, 0),  # registered, not earning
    (4, 14, True, 16_383, 0, 22_498_626_708),  # permit but mining, no dividends
]


def neurons() -> bytes:
    return vec(
        neuron_lite(uid, key(seed), key(seed + 100), NETUID, permit, [(key(seed + 100), 5 * 10**9)],
                    emission, 6_999_000 + uid, incentive=inc, dividends=div)
        for uid, seed, permit, inc, div, emission in NEURONS
    )


# ---------- bittensor's decoding ----------


def registry():
    types = []

    def add(d, path=(), params=()):
        types.append({"id": len(types), "type": {"path": list(path), "params": list(params), "def": d,
                                                 "docs": []}})
        return len(types) - 1

    def composite(name, fields, path=None):
        fs = [{"name": n, "type": t, "typeName": None, "docs": []} for n, t in fields]
        return add({"composite": {"fields": fs}}, path or [name])

    def option(t):
        return add({"variant": {"variants": [
            {"name": "None", "fields": [], "index": 0, "docs": []},
            {"name": "Some", "fields": [{"name": None, "type": t, "typeName": None, "docs": []}],
             "index": 1, "docs": []},
        ]}}, ["Option"], [{"name": "T", "type": t}])

    prim = {p: add({"primitive": p}) for p in ("u8", "bool", "u16", "u32", "u64", "u128", "i128")}
    arr32 = add({"array": {"len": 32, "type": prim["u8"]}})
    acc = add({"composite": {"fields": [{"name": None, "type": arr32, "typeName": None, "docs": []}]}},
              ["sp_core", "crypto", "AccountId32"])
    c = {p: add({"compact": {"type": prim[p]}}) for p in ("u8", "u16", "u64", "u128")}

    def seq(t):
        return add({"sequence": {"type": t}})

    bytes_t, ctext = seq(prim["u8"]), seq(c["u8"])
    ident = composite("SubnetIdentityV3", [(n, bytes_t) for n in (
        "subnet_name", "github_repo", "subnet_contact", "subnet_url", "discord", "description",
        "logo_url", "additional")])
    fixed = composite("FixedI128", [("bits", prim["i128"])], ["substrate_fixed", "FixedI128"])
    dyn = composite("DynamicInfo", [
        ("netuid", c["u16"]), ("owner_hotkey", acc), ("owner_coldkey", acc),
        ("subnet_name", ctext), ("token_symbol", ctext), ("tempo", c["u16"]),
        ("last_step", c["u64"]), ("blocks_since_last_step", c["u64"]), ("emission", c["u64"]),
        ("alpha_in", c["u64"]), ("alpha_out", c["u64"]), ("tao_in", c["u64"]),
        ("alpha_out_emission", c["u64"]), ("alpha_in_emission", c["u64"]),
        ("tao_in_emission", c["u64"]), ("pending_alpha_emission", c["u64"]),
        ("pending_root_emission", c["u64"]), ("subnet_volume", c["u128"]),
        ("network_registered_at", c["u64"]), ("subnet_identity", option(ident)),
        ("moving_price", fixed),
    ])
    pair = add({"array": {"len": 2, "type": prim["u16"]}})
    info = composite("SubnetInfov2", [
        ("netuid", c["u16"]), ("rho", c["u16"]), ("kappa", c["u16"]), ("difficulty", c["u64"]),
        ("immunity_period", c["u16"]), ("max_allowed_validators", c["u16"]),
        ("min_allowed_weights", c["u16"]), ("max_weights_limit", c["u16"]),
        ("scaling_law_power", c["u16"]), ("subnetwork_n", c["u16"]),
        ("max_allowed_uids", c["u16"]), ("blocks_since_last_step", c["u64"]),
        ("tempo", c["u16"]), ("network_modality", c["u16"]), ("network_connect", seq(pair)),
        ("emission_value", c["u64"]), ("burn", c["u64"]), ("owner", acc),
        ("identity", option(ident)),
    ])
    axon = composite("AxonInfo", [
        ("block", prim["u64"]), ("version", prim["u32"]), ("ip", prim["u128"]), ("port", prim["u16"]),
        ("ip_type", prim["u8"]), ("protocol", prim["u8"]), ("placeholder1", prim["u8"]),
        ("placeholder2", prim["u8"])])
    prom = composite("PrometheusInfo", [
        ("block", prim["u64"]), ("version", prim["u32"]), ("ip", prim["u128"]), ("port", prim["u16"]),
        ("ip_type", prim["u8"])])
    stake = add({"tuple": [acc, c["u64"]]})
    lite = composite("NeuronInfoLite", [
        ("hotkey", acc), ("coldkey", acc), ("uid", c["u16"]), ("netuid", c["u16"]),
        ("active", prim["bool"]), ("axon_info", axon), ("prometheus_info", prom),
        ("stake", seq(stake)), ("rank", c["u16"]), ("emission", c["u64"]),
        ("incentive", c["u16"]), ("consensus", c["u16"]), ("trust", c["u16"]),
        ("validator_trust", c["u16"]), ("dividends", c["u16"]), ("last_update", c["u64"]),
        ("validator_permit", prim["bool"]), ("pruning_score", c["u16"]),
    ])
    ids = {"dynamic": option(dyn), "info": option(info), "price": prim["u64"], "neurons": seq(lite)}
    reg = bt_decode.PortableRegistry.from_json(json.dumps({"types": types}))
    return reg, ids


def decode(reg, type_id, data: bytes):
    """bt_decode's reading of `data`, which must need its last byte."""
    ts = f"scale_info::{type_id}"
    value = bt_decode.decode(ts, reg, data)
    try:
        bt_decode.decode(ts, reg, data[:-1])
    except Exception:  # noqa: BLE001 (bt_decode raises plain exceptions)
        return value
    raise AssertionError(f"{ts}: decodes without its last byte; the payload has bytes to spare")


def some(v):
    return v["Some"] if isinstance(v, dict) and "Some" in v else v


def main() -> None:
    payloads = {"dynamic_info": dynamic_info(), "subnet_info": subnet_info_v2(),
                "alpha_price": PRICE_RAO.to_bytes(8, "little"), "neurons_lite": neurons()}
    reg, ids = registry()
    dyn_raw = some(decode(reg, ids["dynamic"], payloads["dynamic_info"]))
    info_raw = some(decode(reg, ids["info"], payloads["subnet_info"]))
    price_rao = decode(reg, ids["price"], payloads["alpha_price"])
    lite_raw = decode(reg, ids["neurons"], payloads["neurons_lite"])

    # What `subtensor.subnet(72)` builds: the dynamic info with the swap price; without the price
    # (a runtime with no SwapRuntimeApi) bittensor falls back to tao_in / alpha_in.
    dyn = DynamicInfo.from_dict({**dyn_raw, "price": Balance.from_rao(price_rao)})
    dyn_fallback = DynamicInfo.from_dict(dict(dyn_raw))
    info = SubnetInfo.from_dict(info_raw)
    lite = [NeuronInfoLite.from_dict(n) for n in lite_raw]

    expected = {
        "decoder": f"bittensor 10.2.0 chain_data from_dict over bt-decode {getattr(bt_decode, '__version__', '0.8.0')}",
        "netuid": dyn.netuid,
        "dynamic_info": {
            "subnet_name": dyn.subnet_name,
            "symbol": dyn.symbol,
            "owner_hotkey": dyn.owner_hotkey,
            "owner_coldkey": dyn.owner_coldkey,
            "tempo": dyn.tempo,
            "last_step": dyn.last_step,
            "blocks_since_last_step": dyn.blocks_since_last_step,
            "alpha_in_rao": dyn.alpha_in.rao,
            "alpha_out_rao": dyn.alpha_out.rao,
            "tao_in_rao": dyn.tao_in.rao,
            "alpha_out_emission_rao": dyn.alpha_out_emission.rao,
            "alpha_in_emission_rao": dyn.alpha_in_emission.rao,
            "tao_in_emission_rao": dyn.tao_in_emission.rao,
            "pending_alpha_emission_rao": dyn.pending_alpha_emission.rao,
            "pending_root_emission_rao": dyn.pending_root_emission.rao,
            "subnet_volume_rao": str(dyn.subnet_volume.rao),
            "network_registered_at": dyn.network_registered_at,
            "identity_subnet_name": dyn.subnet_identity.subnet_name,
            "identity_github_repo": dyn.subnet_identity.github_repo,
            "identity_description": dyn.subnet_identity.description,
            "moving_price": dyn.moving_price,
            "price_tao": dyn.price.tao,
            "reserve_price_tao": dyn_fallback.price.tao,
        },
        "subnet_info": {
            "netuid": info.netuid,
            "burn_rao": info.burn.rao,
            "tempo": info.tempo,
            "immunity_period": info.immunity_period,
            "subnetwork_n": info.subnetwork_n,
            "max_n": info.max_n,
            "owner": info.owner_ss58,
        },
        "neurons": [
            {
                "uid": n.uid,
                "hotkey": n.hotkey,
                "coldkey": n.coldkey,
                "active": n.active,
                "validator_permit": n.validator_permit,
                "incentive": n.incentive,
                "dividends": n.dividends,
                "emission_alpha": n.emission,
                # The integers behind bittensor's floats, for exact comparisons.
                "incentive_u16": r["incentive"],
                "dividends_u16": r["dividends"],
                "emission_rao": r["emission"],
                "last_update": n.last_update,
            }
            for n, r in zip(lite, lite_raw)
        ],
    }
    assert expected["dynamic_info"]["owner_hotkey"] == ss58(key(40))
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in payloads.items():
        (OUT / f"{name}.hex").write_text(data.hex() + "\n")
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")
    sizes = ", ".join(f"{k} {len(v)} B" for k, v in payloads.items())
    print(f"wrote {sizes} and expected.json to {OUT}")


if __name__ == "__main__":
    main()
