"""Promotion under faults (issue 7), on real processes: a PAN, a SAN with
the PAN's CA store imported, two PSNs; judged with the admin nodes' CLI
(`cert list` across pages), the PSNs' status, deployment.conf and stores,
openssl ocsp at the PSNs' responders and what the EST clients got.

- "SAN promoted while PSNs enroll": an EST load on both PSNs (one client
  thread per PSN) runs from before the PAN is SIGKILLed until after `san
  promote` and the PSNs' switch-over; every enrollment succeeds, every
  certificate a client got is on the new primary exactly once, and the
  new primary holds exactly what each PSN's store holds; a revocation
  made on the new primary reaches the issuing PSN's responder; the old
  PAN, restarted, refuses writes and no PSN goes back to it.
- A PSN stopped during the promotion (its deployment.conf names the old
  PAN, epoch 1) finds the new primary by itself when started, delivers
  its outbox there and applies what was done on the new primary
  meanwhile (a revocation, a new enrollment user).
- `san promote` with the SAN daemon stopped, then `san run`: the PSNs
  switch to it.
- Certificates the PAN acked but its replica never got (the SAN was
  stopped, then the PAN died): the PSNs send what they kept of their
  acked outbox again to the new primary, which then holds them all.

Load size: PROMOTE_LOAD enrollments per PSN (default 150 in a normal
build, 30 under the sanitizers, where each costs 10x), one client per
PSN, PROMOTE_PACE seconds between a client's requests so that the load
spans the promotion; the last few of each PSN wait for the switch-over."""

import os
import re
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "psn"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_revocation as rv  # noqa: E402
from estload import EstClient, Load, cert_list  # noqa: E402
from iselab import (LINK_TIMEOUT, exe, lab, member_events, run,  # noqa: E402,F401
                    sanitizer_build, wait_for)
from test_faults import GOOD, REVOKED, ocsp_status, outbox_waiting, store_serials  # noqa: E402
from test_promote import (SWITCH_TIMEOUT, check_old_pan_refused, deployment,  # noqa: E402
                          import_store, link_line, primary_of, wait_primary)

SANITIZED = sanitizer_build() != "none"
# Enrollments per PSN: a real load in a normal build, a small one of the
# same shape under the sanitizers.
PER_PSN = int(os.environ.get("PROMOTE_LOAD", "30" if SANITIZED else "150"))
# A client's pause between two requests: the load lasts about
# PER_PSN * (PACE + one enrollment), longer than kill, promote and switch.
PACE = float(os.environ.get("PROMOTE_PACE", "0.5" if SANITIZED else "0.1"))
# Requests of each PSN held until the switch-over is seen.
HOLD = 5
# Enrollments each PSN must have answered in a phase before the next step.
PER_PHASE = 2
# Phases of the load (Load.mark()).
BEFORE, DOWN, PROMOTED, SWITCHED = range(4)
# An outbox to empty at the new primary: reconnect, a heartbeat timeout,
# batches of 64 with their acks.
DRAIN_TIMEOUT = SWITCH_TIMEOUT


def wait_drained(psn, *admins):
    wait_for(lambda: outbox_waiting(psn) == 0, DRAIN_TIMEOUT, f"{psn.hostname}'s outbox to drain",
             detail=lambda: psn.status(check=False).stdout + psn.diagnostics() +
             "".join(a.diagnostics() for a in admins))


def pem(lab, name, cert):
    path = lab.tmp / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_promote_during_est_load(lab):
    pan, san, psns = deployment(lab)
    import_store(lab, pan, san)
    for psn in psns:
        wait_drained(psn, pan)
    san.wait_events(pan)
    before = cert_list(pan)
    assert set(cert_list(san)) == set(before)

    load = Load(psns, PER_PSN * len(psns), rv.USER, rv.PASSWORD, threads=1, pace=PACE, hold=HOLD)
    for psn in psns:
        load.wait_done(PER_PHASE, BEFORE, psn.hostname)
    pan.kill_group()
    load.mark()
    t_kill = time.monotonic()
    print(f"\nPAN SIGKILLed after {load.done()} enrollments")
    # Enrollments while there is no primary at all: the outboxes keep them.
    for psn in psns:
        load.wait_done(PER_PHASE, DOWN, psn.hostname)
    p = san.cli("promote", check=True)
    assert "epoch 2" in p.stdout, p.stdout
    load.mark()
    for psn in psns:
        wait_primary(psn, "san1", 2)
    load.mark()
    print(f"switch-over {time.monotonic() - t_kill:.1f}s after the kill, "
          f"{load.done()} enrollments so far")
    load.release()
    load.join()
    got, failures = load.got, load.failures
    print(f"{len(got)} enrollments over {len(psns)} PSNs in {load.seconds:.1f}s; per phase "
          f"(before, down, promoted, switched): {[load.done(k) for k in range(4)]}")
    assert not failures, f"{len(failures)} enrollments failed:\n" + "\n".join(failures[:20])
    assert len(got) == PER_PSN * len(psns)
    for psn in psns:
        for phase in (BEFORE, DOWN, SWITCHED):
            assert load.done(phase, psn.hostname) >= 1, (psn.hostname, phase)

    # Every certificate a client got is on the new primary, once (cert_list
    # fails on a serial listed twice), and no other PSN certificate is new
    # there: what each PSN's store holds, the new primary holds.
    for psn in psns:
        wait_drained(psn, san)
    rows = cert_list(san)
    assert set(before) <= set(rows)
    # (The promoted SAN issues its own OCSP responder certificate: not the
    # PSNs'.)
    new = {s for s in rows if s not in before and rows[s][-4] != "san1"}
    want = {s for _, s, _, _ in got.values()}
    assert len(want) == len(got), "two clients got the same serial"
    assert new == want, f"missing on san1: {sorted(want - new)[:10]}; extra: {sorted(new - want)[:10]}"
    for cn, (host, serial, _, _) in got.items():
        fields = rows[serial]
        assert fields[1] == f"CN={cn}" and fields[-4] == host and fields[-1] == "good", fields
    for psn in psns:
        mine = set(cert_list(san, "--node", psn.hostname))
        assert mine == store_serials(psn), (
            f"{psn.hostname}: on san1 only {mine - store_serials(psn)}, "
            f"in its store only {store_serials(psn) - mine}")

    # A revocation on the new primary reaches the issuing PSN's responder:
    # one certificate per PSN, issued while no primary was up.
    revoked = []
    for psn in psns:
        cn, (host, serial, cert, _) = next((cn, v) for cn, v in sorted(got.items())
                                           if v[0] == psn.hostname and v[3] == DOWN)
        path = pem(lab, cn, cert)
        assert ocsp_status(lab, psn, path) == GOOD
        san.cli("cert", "revoke", serial, check=True)
        revoked.append((psn, path))
    for psn, path in revoked:
        wait_for(lambda: ocsp_status(lab, psn, path) == REVOKED, LINK_TIMEOUT,
                 f"{psn.hostname}'s OCSP responder to answer revoked",
                 detail=lambda: str(ocsp_status(lab, psn, path)) + psn.diagnostics())

    check_old_pan_refused(pan, psns)
    # And they go on delivering to san1, never to pan1.
    later = [rv.enroll(lab, psn, f"later-{psn.hostname}")[1] for psn in psns]
    for psn in psns:
        wait_drained(psn, san)
    assert set(later) <= set(cert_list(san))
    assert not set(later) & set(cert_list(pan))


def test_psn_stopped_during_promotion(lab):
    pan, san, (psn1, psn2) = deployment(lab)
    import_store(lab, pan, san)
    pre_cert, pre = rv.enroll(lab, psn2, "pre")
    wait_drained(psn2, pan)
    san.wait_events(pan)
    assert pre in cert_list(san)

    # The PAN dies; psn2 issues one more (its outbox keeps it) and stops.
    pan.kill_group()
    _, unsent = rv.enroll(lab, psn2, "unsent")
    assert outbox_waiting(psn2) == 1
    psn2.stop()
    assert primary_of(psn2) == ("pan1", 1)

    # Promotion; psn1 switches; on the new primary meanwhile: pre revoked,
    # a new enrollment user.
    san.cli("promote", check=True)
    wait_primary(psn1, "san1", 2)
    san.cli("cert", "revoke", pre, check=True)
    p = run([exe("san"), "user", "add", "newcomer", "--data-dir", str(san.datadir)],
            input="newcomer-password-1\n", check=True)

    # psn2 started again: deployment.conf still says pan1, epoch 1; it
    # finds san1 by itself, delivers its outbox there, applies the events.
    assert primary_of(psn2) == ("pan1", 1)
    psn2.start()
    wait_primary(psn2, "san1", 2)
    wait_drained(psn2, san)
    rows = cert_list(san, "--node", "psn2")
    assert unsent in rows and rows[unsent][-1] == "good"
    assert set(rows) == store_serials(psn2)
    seq = int(re.search(r"\(event (\d+)\)", p.stdout).group(1))
    wait_for(lambda: (member_events(psn2) or (0,))[0] >= seq, LINK_TIMEOUT,
             f"psn2 to apply the events up to {seq} from san1",
             detail=lambda: f"{member_events(psn2)}\n{psn2.diagnostics()}")
    wait_for(lambda: ocsp_status(lab, psn2, pre_cert) == REVOKED, LINK_TIMEOUT,
             "psn2's OCSP responder to answer revoked for pre",
             detail=lambda: str(ocsp_status(lab, psn2, pre_cert)) + psn2.diagnostics())
    cert = EstClient(psn2, "newcomer", "newcomer-password-1").enroll("by-newcomer")
    assert cert.subject.rfc4514_string() == "CN=by-newcomer"


def test_promote_with_san_stopped(lab):
    pan, san, psns = deployment(lab)
    import_store(lab, pan, san)
    san.wait_events(pan)
    san.stop()
    pan.kill_group()
    during = [rv.enroll(lab, psn, f"during-{psn.hostname}")[1] for psn in psns]

    # `san promote` on the data directory, no daemon: the next `san run`
    # starts as the primary.
    p = san.cli("promote", check=True)
    assert "now the primary" in p.stdout and "epoch 2" in p.stdout, p.stdout
    assert primary_of(san) == ("san1", 2)
    san.start()
    wait_for(lambda: "Primary:         yes, epoch 2" in san.cli("status").stdout, 60,
             "san1 to serve as the primary", detail=san.diagnostics)
    for psn in psns:
        wait_primary(psn, "san1", 2)
        wait_drained(psn, san)
    rows = cert_list(san)
    assert set(during) <= set(rows)
    for psn in psns:
        wait_for(lambda: re.search(r"connected \(primary san1, epoch 2\)", link_line(psn)),
                 LINK_TIMEOUT, f"{psn.hostname} connected to san1", detail=psn.diagnostics)
    after = [rv.enroll(lab, psn, f"after-{psn.hostname}")[1] for psn in psns]
    for psn in psns:
        wait_drained(psn, san)
    assert set(after) <= set(cert_list(san))


def test_acked_but_not_replicated_reach_the_new_primary(lab):
    """The PAN acks a certificate once its own store holds it; if it dies
    before its replica got it (here the SAN is stopped meanwhile), only
    the PSN still has it.  The PSN keeps what was acked (outbox_acked) and
    sends it again when it adopts a new primary: nothing the PSN issued is
    missing from the promoted SAN."""
    pan, san, psns = deployment(lab)
    import_store(lab, pan, san)
    san.wait_events(pan)
    san.stop()
    acked = [rv.enroll(lab, psn, f"acked-{psn.hostname}-{i}")[1] for psn in psns for i in range(3)]
    for psn in psns:
        wait_drained(psn, pan)
    assert set(acked) <= set(cert_list(pan))
    pan.kill_group()

    p = san.cli("promote", check=True)
    assert "epoch 2" in p.stdout, p.stdout
    san.start()
    for psn in psns:
        wait_primary(psn, "san1", 2)
        wait_drained(psn, san)
    rows = cert_list(san)
    missing = set(acked) - set(rows)
    assert not missing, f"acked by the old PAN, missing on the new primary: {missing}"
    for psn in psns:
        assert "the former primary acked go again to the new one" in psn.log_text(), \
            psn.log_text()[-3000:]

