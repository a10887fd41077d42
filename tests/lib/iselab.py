"""Helpers for the integration tests: run the real executables on temp data
directories and check what they make with independent tools (openssl)."""

import os
import re
import stat
import subprocess
from pathlib import Path

BUILD = Path(os.environ.get("ISELAB_BUILD_DIR", Path(__file__).resolve().parents[2] / "build"))
PASSPHRASE = "correct horse battery staple"


def exe(role):
    """Path of a role executable (pan, san, psn) in the build tree."""
    return str(BUILD / role / role)


def run(args, env=None, check=None, timeout=120, input=None):
    """Run a command; returns CompletedProcess with text stdout/stderr.
    check=True asserts exit 0, check=False asserts non-zero, None: no check."""
    full_env = dict(os.environ)
    full_env.pop("ISELAB_PASSPHRASE", None)
    if env:
        full_env.update(env)
    p = subprocess.run(args, env=full_env, capture_output=True, text=True,
                       timeout=timeout, input=input)
    if check is True:
        assert p.returncode == 0, f"{args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    elif check is False:
        assert p.returncode != 0, f"{args} unexpectedly succeeded:\n{p.stdout}\n{p.stderr}"
    return p


def passphrase_file(tmp_path):
    f = tmp_path / "passphrase"
    if not f.exists():
        f.write_text(PASSPHRASE + "\n")
        f.chmod(0o600)
    return str(f)


def openssl(*args, check=True, input=None):
    return run(["openssl", *args], check=check, input=input)


def cert_text(path):
    return openssl("x509", "-in", str(path), "-noout", "-text").stdout


def cert_subject(path):
    out = openssl("x509", "-in", str(path), "-noout", "-subject", "-nameopt", "RFC2253").stdout
    return out.strip().removeprefix("subject=")


def cert_issuer(path):
    out = openssl("x509", "-in", str(path), "-noout", "-issuer", "-nameopt", "RFC2253").stdout
    return out.strip().removeprefix("issuer=")


def verify(cafile, cert, untrusted=None, purpose=None):
    """openssl verify -x509_strict; returns the CompletedProcess."""
    args = ["verify", "-x509_strict", "-CAfile", str(cafile)]
    if untrusted:
        args += ["-untrusted", str(untrusted)]
    if purpose:
        args += ["-purpose", purpose]
    return openssl(*args, str(cert), check=None)


def tree_snapshot(root):
    """{relative path: (mode, bytes)} of every file below root, to assert
    that a refused operation changed nothing."""
    snap = {}
    root = Path(root)
    if not root.exists():
        return snap
    for p in sorted(root.rglob("*")):
        if p.is_file():
            snap[str(p.relative_to(root))] = (stat.S_IMODE(p.stat().st_mode), p.read_bytes())
    return snap


def basic_constraints(text):
    m = re.search(r"X509v3 Basic Constraints:( critical)?\n\s+(.*)\n", text)
    return (m.group(1) is not None, m.group(2).strip()) if m else None


def key_usage(text):
    m = re.search(r"X509v3 Key Usage:( critical)?\n\s+(.*)\n", text)
    return (m.group(1) is not None, m.group(2).strip()) if m else None
