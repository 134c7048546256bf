"""SCALE encoding helpers shared by the chain fixture scripts (make_metagraph_fixture.py,
make_econ_fixture.py): compact integers, vectors, SS58 addresses and the `NeuronInfoLite` layout
of subtensor `pallets/subtensor/src/rpc_info/neuron_info.rs`. Standard library only; the scripts
check what these write with bittensor's own decoders."""

import hashlib

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def ss58(key: bytes, fmt: int = 42) -> str:
    raw = bytes([fmt]) + key
    raw += hashlib.blake2b(b"SS58PRE" + raw, digest_size=64).digest()[:2]
    n = int.from_bytes(raw, "big")
    s = ""
    while n:
        n, r = divmod(n, 58)
        s = B58[r] + s
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + s


def compact(v: int) -> bytes:
    if v < 1 << 6:
        return bytes([v << 2])
    if v < 1 << 14:
        return ((v << 2) | 1).to_bytes(2, "little")
    if v < 1 << 30:
        return ((v << 2) | 2).to_bytes(4, "little")
    n = max(4, (v.bit_length() + 7) // 8)
    return bytes([((n - 4) << 2) | 3]) + v.to_bytes(n, "little")


def vec(items) -> bytes:
    items = list(items)
    return compact(len(items)) + b"".join(items)


def key(seed: int) -> bytes:
    return hashlib.sha256(bytes([seed])).digest()


def neuron_lite(
    uid, hot, cold, netuid, permit, stake, emission, last_update,
    incentive=65535, consensus=1234, validator_trust=40000, dividends=77,
) -> bytes:
    """One `NeuronInfoLite<AccountId32>`; `stake` is a list of (coldkey, alpha rao)."""
    b = hot + cold + compact(uid) + compact(netuid) + b"\x01"
    # AxonInfo
    b += (5_000_000 + uid).to_bytes(8, "little") + (800).to_bytes(4, "little")
    b += (0xC0A80001 + uid).to_bytes(16, "little") + (8091).to_bytes(2, "little") + bytes([4, 4, 0, 0])
    # PrometheusInfo
    b += (7).to_bytes(8, "little") + (1).to_bytes(4, "little") + (0).to_bytes(16, "little")
    b += (9090).to_bytes(2, "little") + bytes([4])
    b += vec(c + compact(a) for c, a in stake)
    b += compact(0) + compact(emission)  # rank (deprecated, 0), emission
    b += compact(incentive) + compact(consensus) + compact(0)  # incentive, consensus, trust
    b += compact(validator_trust) + compact(dividends)
    b += compact(last_update) + bytes([permit]) + compact(65535)
    return b
