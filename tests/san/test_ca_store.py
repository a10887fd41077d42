"""Export / Import Internal CA Store (issue 7 item 2), on real executables:
`pan ca export --out FILE` on the PAN, `san ca import --in FILE` on the
SAN.

openssl reads the export (it is the PKCS#12 file it claims to be: AES-256
keys, a SHA-256 MAC, a friendlyName per entry) and finds the PAN's keys in
it; the SAN stores them encrypted under its own passphrase.  Refused, with
nothing written: a wrong key ("wrong export key or damaged file"), a
tampered file, the export of another deployment, a key on the command
line."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from iselab import (PASSPHRASE, exe, lab, openssl, private_key_secrets,  # noqa: E402,F401
                    run, tree_snapshot)

EXPORT_KEY = "export key for the lab, 2 words+"


def key_file(lab, text=EXPORT_KEY, name="export.key"):
    f = lab.tmp / name
    f.write_text(text + "\n")
    f.chmod(0o600)
    return f


def export(pan, out, *extra, env=None, check=None):
    return run([exe("pan"), "ca", "export", "--out", str(out), "--data-dir", str(pan.datadir),
                "--passphrase-file", pan.passfile, *extra], env=env, check=check)


def import_(san, path, *extra, env=None, check=None):
    return run([exe("san"), "ca", "import", "--in", str(path), "--data-dir", str(san.datadir),
                "--passphrase-file", san.passfile, *extra], env=env, check=check)


def joined_san(lab, pan):
    san = lab.san("san1")
    san.join(pan.node_add("san1", "san"), check=True)
    return san


def test_export_import_round_trip(lab):
    pan = lab.pan()
    san = joined_san(lab, pan)
    out = lab.tmp / "ca-store.p12"
    p = export(pan, out, "--key-file", str(key_file(lab)), check=True)
    assert "written" in p.stdout
    assert (out.stat().st_mode & 0o777) == 0o600
    # openssl opens it with the key, and with nothing else.
    info = openssl("pkcs12", "-in", str(out), "-info", "-noout", "-passin",
                   f"pass:{EXPORT_KEY}").stderr
    assert "MAC: sha256" in info, info
    assert "PBES2, PBKDF2, AES-256-CBC" in info, info
    assert "Shrouded Keybag" in info
    pem = openssl("pkcs12", "-in", str(out), "-nodes", "-passin", f"pass:{EXPORT_KEY}").stdout
    for name in ("root-ca", "node-ca", "ocsp-responder"):
        assert f"friendlyName: {name}" in pem, pem
    assert openssl("pkcs12", "-in", str(out), "-noout", "-passin", "pass:not the key",
                   check=False).returncode != 0
    ca = pan.datadir / "ca"

    # Import, the key from the environment this time.
    before = tree_snapshot(san.datadir)
    p = import_(san, out, env={"ISELAB_EXPORT_KEY": EXPORT_KEY}, check=True)
    assert "imported" in p.stdout
    imp = san.datadir / "ca" / "imported"
    assert (imp.stat().st_mode & 0o777) == 0o700
    for name in ("root-ca", "node-ca", "ocsp-responder"):
        assert (imp / f"{name}.crt").read_text() == (ca / f"{name}.crt").read_text()
        k = imp / f"{name}.key"
        assert (k.stat().st_mode & 0o777) == 0o600
        assert k.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        # Under the SAN's passphrase, the same key as the PAN's.
        assert private_key_secrets(k, PASSPHRASE) == private_key_secrets(ca / f"{name}.key")
    assert set(tree_snapshot(san.datadir)) - set(before) >= {"ca/imported/node-ca.key"}
    # A second import is refused: the store is there.
    p = import_(san, out, "--key-file", str(key_file(lab)), check=False)
    assert p.returncode == 1 and "already imported" in p.stderr


def test_refusals_write_nothing(lab):
    pan = lab.pan()
    san = joined_san(lab, pan)
    out = lab.tmp / "ca-store.p12"
    kf = key_file(lab)
    # A key on the command line: refused before anything is read.
    for args in (["--key", EXPORT_KEY], [f"--key={EXPORT_KEY}"], ["--password", EXPORT_KEY]):
        p = export(pan, out, *args, check=False)
        assert p.returncode == 2 and "never taken from the command line" in p.stderr, p.stderr
        assert not out.exists()
    p = export(pan, out, check=False)
    assert p.returncode == 1 and "ISELAB_EXPORT_KEY" in p.stderr
    assert not out.exists()
    export(pan, out, "--key-file", str(kf), check=True)
    p = export(pan, out, "--key-file", str(kf), check=False)
    assert p.returncode == 1 and "exists" in p.stderr

    before = tree_snapshot(san.datadir)

    def refused(path, *extra, words):
        p = import_(san, path, *extra, check=False)
        assert p.returncode != 0, p.stdout
        assert words in p.stderr, p.stderr
        assert tree_snapshot(san.datadir) == before, "a refused import wrote something"
        return p

    p = refused(out, "--key", EXPORT_KEY, words="never taken from the command line")
    assert p.returncode == 2
    # Wrong key.
    p = refused(out, "--key-file", str(key_file(lab, "a wrong export key", "wrong.key")),
                words="wrong export key or damaged file")
    assert p.returncode == 1
    # Tampered: one byte changed in the middle, and the file cut short.
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = lab.tmp / "tampered.p12"
    bad.write_bytes(bytes(data))
    refused(bad, "--key-file", str(kf), words="wrong export key or damaged file")
    short = lab.tmp / "short.p12"
    short.write_bytes(out.read_bytes()[:len(data) - 40])
    refused(short, "--key-file", str(kf), words="wrong export key or damaged file")

    # The export of another deployment: a PAN of its own, same key.
    other = lab.pan("pan1", datadir=lab.tmp / "other-pan", start=False)
    other_out = lab.tmp / "other.p12"
    export(other, other_out, "--key-file", str(kf), check=True)
    refused(other_out, "--key-file", str(kf), words="another deployment")
    # The file opens on the PAN that is not a SAN: refused too.
    p = run([exe("san"), "ca", "import", "--in", str(out), "--data-dir", str(pan.datadir),
             "--key-file", str(kf), "--passphrase-file", pan.passfile], check=False)
    assert p.returncode == 1 and "not a san" in p.stderr
    assert not os.path.exists(san.datadir / "ca" / "imported")
