"""pan init and pan status on real executables (issue 3, item 1)."""

import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from iselab import (PASSPHRASE, basic_constraints, cert_issuer, cert_subject,  # noqa: E402
                    cert_text, exe, key_usage, passphrase_file, run, tree_snapshot, verify)

PAN = exe("pan")


def init(tmp_path, *extra, datadir=None, check=True, env=None):
    d = datadir or tmp_path / "pan1"
    return d, run([PAN, "init", "--hostname", "pan1", "--data-dir", str(d),
                   "--passphrase-file", passphrase_file(tmp_path), *extra],
                  check=check, env=env)


@pytest.mark.parametrize("keytype,expect", [("ec:p256", "prime256v1"),
                                            ("ec:p384", "secp384r1"),
                                            ("rsa:2048", "2048 bit")])
def test_init_hierarchy(tmp_path, keytype, expect):
    d, _ = init(tmp_path, "--ca-key", keytype)
    root, node = d / "ca/root-ca.crt", d / "ca/node-ca.crt"
    assert cert_subject(root) == "CN=Certificate Services Root CA - pan1"
    assert cert_issuer(root) == "CN=Certificate Services Root CA - pan1"
    assert cert_subject(node) == "CN=Certificate Services Node CA - pan1"
    assert cert_issuer(node) == "CN=Certificate Services Root CA - pan1"
    # An independent verifier accepts the chain, strictly.
    assert verify(root, root).returncode == 0
    p = verify(root, node)
    assert p.returncode == 0, p.stdout + p.stderr
    rt, nt = cert_text(root), cert_text(node)
    assert expect in rt and expect in nt
    assert basic_constraints(rt) == (True, "CA:TRUE, pathlen:2")
    assert basic_constraints(nt) == (True, "CA:TRUE, pathlen:1")
    crit, ku = key_usage(nt)
    assert crit and "Certificate Sign" in ku and "CRL Sign" in ku
    # Serial numbers of at least 64 random bits.
    for t in (rt, nt):
        m = re.search(r"Serial Number:\s*\n\s+([0-9a-f:]+)", t)
        assert m and len(m.group(1).replace(":", "")) >= 16


def test_init_keys_encrypted_and_private(tmp_path):
    d, _ = init(tmp_path, "--ca-key", "ec:p256")
    for k in ("ca/root-ca.key", "ca/node-ca.key", "ca/ocsp-responder.key", "curve.key"):
        p = d / k
        assert (p.stat().st_mode & 0o777) == 0o600
        body = p.read_text()
        assert body.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        # openssl can open it with the passphrase, and not without.
        ok = run(["openssl", "pkey", "-in", str(p), "-passin", "pass:" + PASSPHRASE, "-noout"])
        assert ok.returncode == 0
        bad = run(["openssl", "pkey", "-in", str(p), "-passin", "pass:wrong-passphrase", "-noout"])
        assert bad.returncode != 0
    assert (d.stat().st_mode & 0o777) == 0o700
    pub = (d / "curve.pub").read_text().strip()
    assert len(pub) == 40


def test_init_status(tmp_path):
    d, _ = init(tmp_path, "--ca-key", "ec:p256", "--ocsp-hierarchy", "legacy")
    p = run([PAN, "status", "--data-dir", str(d)], check=True)
    assert "pan1 (Primary Administration Node)" in p.stdout
    assert "OCSP hierarchy:  legacy" in p.stdout
    assert "Certificate Services Root CA - pan1" in p.stdout
    assert "Certificate Services Node CA - pan1" in p.stdout
    assert "3 certificates issued" in p.stdout
    assert re.search(r"PROCESS NAME\s+STATE\s+PROCESS ID", p.stdout)


def test_init_refuses_overwrite(tmp_path):
    d, _ = init(tmp_path, "--ca-key", "ec:p256")
    before = tree_snapshot(d)
    _, p = init(tmp_path, "--ca-key", "ec:p256", check=False)
    assert p.returncode == 1
    assert "already holds a deployment" in p.stderr and "--force" in p.stderr
    assert tree_snapshot(d) == before


def test_init_force_replaces(tmp_path):
    d, _ = init(tmp_path, "--ca-key", "ec:p256")
    old_root = (d / "ca/root-ca.crt").read_bytes()
    old_conf = (d / "node.conf").read_text()
    init(tmp_path, "--ca-key", "ec:p256", "--force")
    assert (d / "ca/root-ca.crt").read_bytes() != old_root
    assert (d / "node.conf").read_text() != old_conf
    p = run([PAN, "status", "--data-dir", str(d)], check=True)
    # The old store went with the old CA: only the new three certificates
    # (Root CA, Node CA, OCSP responder).
    assert "3 certificates issued" in p.stdout


def test_init_passphrase_from_environment(tmp_path):
    d = tmp_path / "envpan"
    run([PAN, "init", "--hostname", "pan1", "--data-dir", str(d), "--ca-key", "ec:p256"],
        env={"ISELAB_PASSPHRASE": PASSPHRASE}, check=True)
    assert (d / "node.conf").exists()


@pytest.mark.parametrize("args,env,message,status", [
    (["--hostname", "pan_1"], {}, "not a valid host name", 2),
    (["--hostname", "-pan"], {}, "not a valid host name", 2),
    (["--ca-key", "rsa:1024"], {}, "rsa:1024", 2),
    (["--ocsp-hierarchy", "strict"], {}, "unknown OCSP hierarchy", 2),
    (["--passphrase-file", "/nonexistent/pass"], {}, "/nonexistent/pass", 1),
    ([], {"ISELAB_PASSPHRASE": "short"}, "shorter than the minimum", 1),
    ([], {}, "ISELAB_PASSPHRASE", 1),
])
def test_init_refusals_change_nothing(tmp_path, args, env, message, status):
    d = tmp_path / "refused"
    base = {"--hostname": "pan1", "--data-dir": str(d), "--ca-key": "ec:p256"}
    it = iter(args)
    for a in it:
        base[a] = next(it)
    argv = [PAN, "init"]
    for k, v in base.items():
        argv += [k, v]
    p = run(argv, env=env, check=False)
    assert p.returncode == status, p.stderr
    assert message in p.stderr
    assert not d.exists()


def test_init_refuses_readable_passphrase_file(tmp_path):
    f = tmp_path / "loose"
    f.write_text(PASSPHRASE)
    f.chmod(0o644)
    d = tmp_path / "p"
    p = run([PAN, "init", "--hostname", "pan1", "--data-dir", str(d), "--passphrase-file", str(f),
             "--ca-key", "ec:p256"], check=False)
    assert p.returncode == 1 and "loose" in p.stderr
    assert not d.exists()


def test_status_without_deployment(tmp_path):
    p = run([PAN, "status", "--data-dir", str(tmp_path)], check=False)
    assert p.returncode == 1
    assert "holds no node" in p.stderr


def test_cli_usage():
    assert run([PAN], check=False).returncode == 2
    assert run([PAN, "frobnicate"], check=False).returncode == 2
    assert "pan (ise-lab)" in run([PAN, "--version"], check=True).stdout
    assert "init" in run([PAN, "help"], check=True).stdout
