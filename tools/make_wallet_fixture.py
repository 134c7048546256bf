"""Writes tests/fixtures/wallets/: a bittensor hotkey file in the $NACL encrypted format.

The format is bittensor-wallet's (src/keyfile.rs: encrypt_keyfile_data / derive_key):
  b"$NACL" + nonce(24) + secretbox(plaintext)   (libsodium secretbox: MAC first)
  key = argon2i13(password, NACL_SALT, OPSLIMIT_SENSITIVE, MEMLIMIT_SENSITIVE), 32 bytes.

The plaintext is the hotkey JSON of substrate's well-known dev account //Alice (public test
key material, never a real key). The Rust tests decrypt it with `sv72::serve::keys`.

Usage: /root/.venvs/sv72tools/bin/python tools/make_wallet_fixture.py   (needs pynacl)
"""

import json
from pathlib import Path

from nacl import pwhash, secret, utils

NACL_SALT = b"\x13q\x83\xdf\xf1Z\t\xbc\x9c\x90\xb5Q\x879\xe9\xb1"
PASSWORD = b"correct horse 72"
ALICE_SEED = "0xe5be9a5092b81bca64be81d212e7f2f9eba183bb7a90954f7b76361f6edb5c0a"
ALICE_PK = "0xd43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d"
ALICE_SS58 = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "wallets"
    hotkeys = out / "locked" / "hotkeys"
    hotkeys.mkdir(parents=True, exist_ok=True)
    plaintext = json.dumps(
        {
            "accountId": ALICE_PK,
            "publicKey": ALICE_PK,
            "secretSeed": ALICE_SEED,
            "ss58Address": ALICE_SS58,
        }
    ).encode()
    key = pwhash.argon2i.kdf(
        secret.SecretBox.KEY_SIZE,
        PASSWORD,
        NACL_SALT,
        opslimit=pwhash.argon2i.OPSLIMIT_SENSITIVE,
        memlimit=pwhash.argon2i.MEMLIMIT_SENSITIVE,
    )
    nonce = utils.random(secret.SecretBox.NONCE_SIZE)
    box = secret.SecretBox(key).encrypt(plaintext, nonce)  # nonce + MAC + ciphertext
    (hotkeys / "default").write_bytes(b"$NACL" + bytes(box))
    # btcli writes the public half beside it.
    (hotkeys / "defaultpub.txt").write_text(
        json.dumps({"accountId": ALICE_PK, "publicKey": ALICE_PK, "ss58Address": ALICE_SS58})
    )
    (out / "plaintext.json").write_bytes(plaintext)
    print(f"wrote {hotkeys / 'default'} ({len(box) + 5} bytes)")


if __name__ == "__main__":
    main()
