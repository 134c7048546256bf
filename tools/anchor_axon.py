"""The official bittensor axon with a trivial forward: the throughput anchor of `make serve-check`.

Run by `tests/serve_load.rs` (`anchor_throughput_vs_official_axon`) when SV72_ANCHOR_PYTHON names a
Python with bittensor 9.12.2 (see tools/requirements-anchor.txt). The forward only sets
`prediction = 0.5`: no image decoding, so the anchor does less work per query than sv72 does.
Prints one line `anchor axon listening on 127.0.0.1:PORT hotkey SS58` once it serves.
"""

import argparse
import tempfile
import time

import bittensor as bt
from bittensor_wallet import Keypair


class ImageSynapse(bt.Synapse):
    """NATIX StreetVision's synapse: no hash fields, the three body fields."""

    testnet_label: int = -1
    image: str = ""
    prediction: float = -1.0


async def forward(synapse: ImageSynapse) -> ImageSynapse:
    synapse.prediction = 0.5
    return synapse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seed-hex", default="07" * 32, help="32-byte hotkey mini secret, hex")
    args = ap.parse_args()
    wallets = tempfile.mkdtemp(prefix="sv72-anchor-wallet-")
    kp = Keypair.create_from_seed("0x" + args.seed_hex)
    wallet = bt.Wallet(name="anchor", hotkey="anchor", path=wallets)
    wallet.set_hotkey(kp, encrypt=False, overwrite=True)
    wallet.set_coldkeypub(kp, overwrite=True)
    axon = bt.Axon(wallet=wallet, port=args.port, ip="127.0.0.1", external_ip="127.0.0.1")
    axon.attach(forward_fn=forward)
    axon.start()
    print(
        f"anchor axon listening on 127.0.0.1:{args.port} hotkey {kp.ss58_address}", flush=True
    )
    try:
        while True:
            time.sleep(1)
    finally:
        axon.stop()


if __name__ == "__main__":
    main()
