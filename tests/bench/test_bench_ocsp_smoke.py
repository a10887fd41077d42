"""bench-ocsp-smoke: the OCSP benchmark's tools work, cheaply enough for
every test run (the benchmark itself is `ninja -C BUILD bench-ocsp`,
docs/PERFORMANCE.md).  A PAN and a joined PSN; store_fill puts 200
synthetic certificates of the PSN's Sub CA into a copy of its store (the
count checked with mdb_stat); `psn service ocsp` serves that copy, and
ocsp_bench sends 50 requests of each kind (cached GET, POST, nonce POST,
GET on new connections), every answer verified in full, none failing.
And the generator must be able to fail: an unknown serial, another
issuer's certificate, a raw answer of the wrong size are all errors with
exit status 1."""

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from iselab import BUILD, clean_env, exe, lab, tail, wait_for  # noqa: E402,F401

OCSP_BENCH = str(BUILD / "tests" / "bench" / "ocsp_bench")
STORE_FILL = str(BUILD / "tests" / "bench" / "store_fill")
OCSP_PORT = 2560


def result(p):
    m = re.search(r"^RESULT (.*)$", p.stdout, re.M)
    assert m, f"no RESULT line (exit {p.returncode}):\n{p.stdout}\n{p.stderr}"
    return dict(kv.split("=", 1) for kv in m.group(1).split())


def bench(*argv):
    return subprocess.run([OCSP_BENCH, *argv], capture_output=True, text=True, timeout=300,
                          env=clean_env())


def listening(ip, port):
    try:
        socket.create_connection((ip, port), timeout=1).close()
        return True
    except OSError:
        return False


def record_count(store):
    p = subprocess.run(["mdb_stat", "-s", "certs", str(store)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return int(re.search(r"Entries: (\d+)", p.stdout).group(1))


def test_bench_ocsp_smoke(lab):
    pan = lab.pan()
    psn = lab.psn("psn1")
    psn.join(pan.node_add("psn1", "psn"), check=True)
    d = lab.tmp / "psn-copy"
    shutil.copytree(psn.datadir, d, symlinks=True)
    before = record_count(d / "store")
    serials = lab.tmp / "serials.txt"
    p = subprocess.run([STORE_FILL, "--store", str(d / "store"), "--issuer",
                        str(d / "ca" / "endpoint-sub-ca.crt"), "--count", "200",
                        "--serials-out", str(serials), "--sample", "20"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "200 records" in p.stdout, p.stdout
    assert record_count(d / "store") - before == 200
    assert len(serials.read_text().split()) == 20
    # store_fill refuses what it cannot do, and says why.
    p = subprocess.run([STORE_FILL, "--store", str(d / "store"), "--issuer",
                        str(d / "ca" / "endpoint-sub-ca.crt"), "--count", "0"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "--count" in p.stderr, p.stderr

    addr = lab.address()
    out = lab.tmp / "ocsp.out"
    with open(out, "wb") as f:
        svc = subprocess.Popen([exe("psn"), "service", "ocsp", "--data-dir", str(d),
                                "--passphrase-file", psn.passfile,
                                "--set", f"ocsp.listen={addr.ip}:{OCSP_PORT}"],
                               stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                               env=clean_env(), start_new_session=True)
    lab.children.append(svc)

    def up():
        assert svc.poll() is None, tail(out)
        return listening(addr.ip, OCSP_PORT) and "refresh:" in out.read_text()
    wait_for(up, 60, "the OCSP responder to serve", detail=lambda: tail(out))
    assert re.search(r"refresh: 2\d\d certificates of our Sub CA", out.read_text()), \
        tail(out)

    ca = d / "ca"
    chain = lab.tmp / "chain.pem"
    chain.write_text((ca / "endpoint-sub-ca.crt").read_text() + (ca / "chain.pem").read_text())
    target = ["--connect", f"{addr.ip}:{OCSP_PORT}", "--issuer",
              str(ca / "endpoint-sub-ca.crt"), "--serials", str(serials)]
    full = ["--verify-every", "1", "--cafile", str(ca / "root-ca.crt"),
            "--untrusted", str(chain)]
    smoke = ["--count", "50", "--concurrency", "4", "--duration", "120"]
    for mode in (["get"], ["post"], ["nonce"], ["get", "--new-conn"]):
        p = bench(*target, "--mode", *mode, *full, *smoke)
        r = result(p)
        assert p.returncode == 0, p.stdout + p.stderr + tail(out)
        assert (r["mode"], r["requests"], r["ok"], r["errors"], r["verified"]) == \
            (mode[0], "50", "50", "0", "50"), r
        assert float(r["rate"]) > 0 and int(r["bytes"]) > 500, r
        # Keep-alive: one connection per generator slot, not per request.
        assert int(r["connects"]) == (50 if "--new-conn" in mode else 4), r

    # An unknown serial (ours by issuer, not in the store): "unknown",
    # which the full check refuses.
    bad = lab.tmp / "unknown.txt"
    bad.write_text("7fffffffffffffffffffffffffffff01\n")
    p = bench(*target[:4], "--serials", str(bad), "--mode", "post", *full, *smoke)
    r = result(p)
    assert p.returncode == 1 and r["errors"] == "50" and r["ok"] == "0", p.stdout + p.stderr
    assert "status is not good" in p.stderr, p.stderr
    # Another issuer's certificate: unauthorized, refused by the cheap check
    # that every answer gets.
    p = bench("--connect", f"{addr.ip}:{OCSP_PORT}", "--issuer", str(ca / "root-ca.crt"),
              "--serials", str(serials), "--mode", "get", "--verify-every", "0", *smoke)
    r = result(p)
    assert p.returncode == 1 and r["errors"] == "50", p.stdout + p.stderr
    assert "unauthorized" in p.stderr, p.stderr
    # Raw mode: GET /ocsp is an empty request, answered malformedRequest
    # (5 bytes): the right size passes, another fails.
    raw = ["--connect", f"{addr.ip}:{OCSP_PORT}", "--mode", "raw", "--path", "/ocsp", *smoke]
    p = bench(*raw, "--expect-size", "5")
    assert p.returncode == 0 and result(p)["ok"] == "50", p.stdout + p.stderr
    p = bench(*raw, "--expect-size", "6")
    assert p.returncode == 1 and result(p)["errors"] == "50", p.stdout + p.stderr
    svc.terminate()
    assert svc.wait(30) == 0, tail(out)
