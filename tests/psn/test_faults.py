"""Faults the deployment must survive with nothing lost (issue 7), on real
processes, judged with the PAN's CLI, the PSN's status and store
(mdb_dump), openssl ocsp and what the EST clients got:

- the PAN killed with SIGKILL during an EST load across two PSNs: every
  enrollment succeeds while it is down, the PSNs' OCSP responders answer
  from their local data, the outboxes hold what waits; after `pan run`
  again the outboxes drain and `pan cert list` holds exactly what the
  clients got, each once;
- a PSN cut off from the PAN by a real network cut (a network namespace
  and a veth pair, the host end taken down): the PAN raises "Queue Link
  Error"; the PSN keeps issuing and answers OCSP `good` for a certificate
  the PAN revoked meanwhile; once reconnected it answers `revoked` (the
  time it took is printed), the alarm clears and the outbox drains;
- a PSN whose outbox holds certificates the PAN stored but whose ack was
  lost (the PAN's data segments dropped), and certificates that never
  reached the PAN (the whole link cut), killed with its process group and
  restarted: delivery resumes, nothing lost, nothing stored twice;
- a PSN's whole process group SIGKILLed during an EST load over two PSNs:
  every certificate a client got reaches the PAN once, and the PAN holds
  exactly what the PSN's store holds.

The first test makes 200 enrollments in both builds (about 7 s normal,
20 to 40 s under ASan+UBSan); FAULTS_ENROLLMENTS changes that for a run by hand,
FAULTS_CUT_SECONDS the shortest cut of the cut-link test (15 s)."""

import base64
import os
import re
import socket
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from estload import EST_PORT, Load, cert_list, make_csr, norm  # noqa: E402
from iselab import (EVENTS_PORT, LINK_TIMEOUT, MESSAGING_PORT, lab,  # noqa: E402,F401
                    netns_unavailable, parse_table, run, wait_for)

USER, PASSWORD = "faults", "faults-password-1"
OCSP_PORT = 2560
ENROLLMENTS = int(os.environ.get("FAULTS_ENROLLMENTS", "200"))
# Services up after `psn run` (key decryption under ASan is slow).
SERVICE_TIMEOUT = 120.0
# An outbox to empty once the PAN is reachable: the link's reconnect
# backoff, a heartbeat timeout, and batches of 64 with their acks.
DRAIN_TIMEOUT = LINK_TIMEOUT + 60
# Shortest cut of the cut-link test: past the member link's reconnect
# backoff (500 ms doubling to 5 s, common/join.c), so that reconnection
# happens at the backoff's ceiling.
CUT_SECONDS = float(os.environ.get("FAULTS_CUT_SECONDS", "15"))
# Certificates a PSN issues itself at join (OCSP responder, EST server and
# client) and delivers through its outbox like any other.
NODE_CERTS = 3


# -- helpers ------------------------------------------------------------------

def tcp_listening(ip, port, netns=None):
    if netns is not None:
        return netns.run(["bash", "-c", f"exec 3<>/dev/tcp/{ip}/{port}"], timeout=10).returncode == 0
    try:
        socket.create_connection((ip, port), timeout=1).close()
        return True
    except OSError:
        return False


def wait_services(psn):
    ip = psn.address.ip
    wait_for(lambda: tcp_listening(ip, EST_PORT, psn.netns) and
             tcp_listening(ip, OCSP_PORT, psn.netns),
             SERVICE_TIMEOUT, f"{psn.hostname} to serve EST and OCSP", detail=psn.log_text)


def outbox_waiting(psn):
    out = psn.status().stdout
    m = re.search(r"Outbox:\s+(\d+) certificates? waiting", out)
    assert m, out
    return int(m.group(1))


def link_state(psn):
    m = re.search(r"PAN link:\s+(\S+)", psn.status().stdout)
    return m.group(1).rstrip(",") if m else None


def mdb_keys(psn, table):
    """The keys of a table of the PSN's store (mdb_dump, read-only, next
    to the running daemon), as hex."""
    p = run(["mdb_dump", "-s", table, str(psn.datadir / "store")], timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split("HEADER=END\n", 1)[1].split("DATA=END", 1)[0].splitlines()
    return [ln.strip() for ln in lines[0::2]]


def store_serials(psn):
    """Serials of the certificates in the PSN's store (certs_by_serial)."""
    return {norm(k) for k in mdb_keys(psn, "certs_by_serial")}


def outbox_serials(psn):
    """Serials in the PSN's outbox (key: 8 bytes of time, then the serial)."""
    return [norm(k[16:]) for k in mdb_keys(psn, "outbox")]


def wait_drained(psn, pan):
    wait_for(lambda: outbox_waiting(psn) == 0, DRAIN_TIMEOUT,
             f"{psn.hostname}'s outbox to drain",
             detail=lambda: psn.status(check=False).stdout + psn.diagnostics() + pan.diagnostics())


def enroll_curl(lab, psn, name):
    """One enrollment with curl, run in the PSN's namespace when it has
    one (reachable while the namespace is cut off from the host): the
    certificate's path and its serial."""
    key, der = make_csr(name)
    csr, body = lab.tmp / f"{name}.csr.b64", lab.tmp / f"{name}.p7"
    csr.write_bytes(base64.encodebytes(der))
    argv = ["curl", "-sS", "--max-time", "30",
            "--resolve", f"{psn.hostname}:{EST_PORT}:{psn.address.ip}",
            "--cacert", str(psn.datadir / "ca" / "root-ca.crt"), "-u", f"{USER}:{PASSWORD}",
            "-H", "Content-Type: application/pkcs10", "--data-binary", f"@{csr}",
            "-o", str(body), "-w", "%{http_code}",
            f"https://{psn.hostname}:{EST_PORT}/.well-known/est/simpleenroll"]
    p = psn.netns.run(argv, timeout=60) if psn.netns else run(argv, timeout=60)
    assert p.returncode == 0 and p.stdout == "200", f"{name}: {p.stdout}{p.stderr}"
    cert = pkcs7.load_der_pkcs7_certificates(base64.b64decode(body.read_bytes()))[0]
    assert cert.public_key().public_numbers() == key.public_key().public_numbers(), name
    path = lab.tmp / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, norm(cert.serial_number)


def ocsp_status(lab, psn, cert):
    """The PSN's OCSP responder on a certificate, asked with openssl ocsp
    (from the PSN's namespace when it has one), with a nonce (a response
    signed for the request) and then without (the pre-signed one): both
    must verify.  The two words (good, revoked or unknown); they differ
    only while a change is being applied between the two requests."""
    d = psn.datadir / "ca"
    chain = lab.tmp / f"{psn.hostname}-ocsp-chain.pem"
    chain.write_text((d / "endpoint-sub-ca.crt").read_text() + (d / "chain.pem").read_text())
    words = []
    for nonce in ([], ["-no_nonce"]):
        argv = ["openssl", "ocsp", "-issuer", str(d / "endpoint-sub-ca.crt"), "-cert", str(cert),
                "-url", f"http://{psn.address.ip}:{OCSP_PORT}/ocsp", "-timeout", "20",
                "-CAfile", str(d / "root-ca.crt"), "-verify_other", str(chain), *nonce]
        p = psn.netns.run(argv, timeout=60) if psn.netns else run(argv, timeout=60)
        out = p.stdout + p.stderr
        assert p.returncode == 0 and "Response verify OK" in out, out
        m = re.search(rf"{re.escape(str(cert))}: (good|revoked|unknown)", out)
        assert m, out
        words.append(m.group(1))
    return tuple(words)


GOOD, REVOKED = ("good", "good"), ("revoked", "revoked")


def pan_connections(pan, psn, port):
    """Established TCP connections from the PSN's address to the PAN's
    port, as the PAN's host sees them (ss)."""
    p = run(["ss", "-Htn", "state", "established", "src", f"{pan.address.ip}:{port}",
             "dst", psn.address.ip], check=True)
    return len([ln for ln in p.stdout.splitlines() if ln.strip()])


def queue_link_alarms(pan, host):
    return [ln for ln in pan.alarms().splitlines() if "Queue Link Error" in ln and host in ln]


def start_deployment(lab, hosts, netns=None, psn_args=()):
    """A PAN (on the namespace's host end when there is a namespace) and
    PSNs joined, running, their services up, their own certificates
    delivered."""
    pan = lab.pan(address=netns.host if netns else None)
    pan.user_add(USER, PASSWORD)
    psns = []
    for h in hosts:
        psn = lab.psn(h, netns=netns)
        psn.run_args += list(psn_args)
        psn.join(pan.node_add(h, "psn"), check=True)
        psns.append(psn)
    for psn in psns:
        psn.start()
    for psn in psns:
        wait_services(psn)
        psn.wait_events(pan)
        wait_drained(psn, pan)
    return pan, psns


@pytest.fixture
def netns_ok():
    why = netns_unavailable()
    if why:
        pytest.skip(f"no network namespaces here ({why}): the cut-link tests need them")


def subject_of(fields):
    """`pan cert list` row: SERIAL SUBJECT... NODE PROFILE NOT-AFTER STATUS."""
    return " ".join(fields[1:-4]), fields[-4], fields[-1]


# -- the PAN killed during an EST load -----------------------------------------

def test_pan_sigkill_during_est_load(lab):
    pan, psns = start_deployment(lab, ["psn1", "psn2"])
    before = cert_list(pan)
    assert len(before) >= 2 * NODE_CERTS, before
    load = Load(psns, ENROLLMENTS, USER, PASSWORD)
    # A fifth of the load through, the PAN dies (`pan run` SIGKILLed; its
    # CA signer notices and leaves).
    load.wait_done(ENROLLMENTS // 5)
    pan.kill()
    load.fault()
    print(f"\nPAN SIGKILLed after {len(load.got)} of {ENROLLMENTS} enrollments")
    wait_for(lambda: not pan.group_pids(), 20, "the PAN's CA signer to exit")
    load.join()
    got, failures = load.got, load.failures
    print(f"{ENROLLMENTS} enrollments over {len(psns)} PSNs in {load.seconds:.1f}s")
    assert not failures, f"{len(failures)} enrollments failed:\n" + "\n".join(failures[:20])
    assert len(got) == ENROLLMENTS
    serials = {(h, s) for h, s, _, _ in got.values()}
    assert len(serials) == ENROLLMENTS, "two clients got the same serial from one PSN"
    down = [v for v in got.values() if v[3]]
    assert down, "no enrollment was made while the PAN was down"
    print(f"{len(down)} of them while the PAN was down")

    # While the PAN is down: each PSN reports the link down, holds every
    # certificate it issued in its store and those the PAN has not
    # acked in its outbox, and its OCSP responder answers from its data.
    for psn in psns:
        wait_for(lambda: link_state(psn) == "disconnected", LINK_TIMEOUT,
                 f"{psn.hostname} to report its PAN link down", detail=lambda: psn.status().stdout)
        mine = {s for h, s, _, _ in got.values() if h == psn.hostname}
        assert mine <= store_serials(psn), f"{psn.hostname}'s store lacks {mine - store_serials(psn)}"
        unsent = {s for h, s, _, after in got.values() if h == psn.hostname and after}
        queued = outbox_serials(psn)
        assert len(queued) == len(set(queued)) == outbox_waiting(psn)
        assert unsent <= set(queued), f"issued with the PAN down, not queued: {unsent - set(queued)}"
        print(f"{psn.hostname}: outbox {len(queued)} while the PAN is down")
        h, s, cert, _ = next(v for v in down if v[0] == psn.hostname)
        path = lab.tmp / f"{psn.hostname}-while-down.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        assert ocsp_status(lab, psn, path) == GOOD

    # `pan run` again: the outboxes drain, and the PAN holds exactly what
    # it held before and what the clients got, each once.
    pan.start()
    t1 = time.monotonic()
    for psn in psns:
        pan.wait_state(psn.hostname, "connected")
        wait_drained(psn, pan)
        assert outbox_serials(psn) == []
    print(f"outboxes drained {time.monotonic() - t1:.1f}s after the PAN's restart")
    after = cert_list(pan)
    assert set(before) <= set(after)
    for s in before:
        assert after[s] == before[s], f"{s} changed: {before[s]} -> {after[s]}"
    new = {s: f for s, f in after.items() if s not in before}
    assert len(new) == ENROLLMENTS, f"{len(new)} new certificates on the PAN, not {ENROLLMENTS}"
    for cn, (host, serial, cert, _) in sorted(got.items()):
        assert serial in new, f"{cn} ({serial} from {host}) is not on the PAN"
        assert subject_of(new[serial]) == (f"CN={cn}", host, "good"), (cn, new[serial])
    count = pan.cert_count()
    if count is not None:
        assert count == len(before) + ENROLLMENTS
    # A few in full: the PAN's copy is the client's certificate.
    for cn in sorted(got)[::max(1, ENROLLMENTS // 5)] + [sorted(got)[-1]]:
        host, serial, cert, _ = got[cn]
        p = pan.cli("cert", "show", serial, check=True)
        assert cert.public_bytes(serialization.Encoding.PEM).decode().strip() in p.stdout, p.stdout
        assert re.search(rf"Issuer node:\s+{host}\b", p.stdout), p.stdout


# -- a PSN cut off from the PAN -------------------------------------------------

def test_cut_psn_converges_to_revoked(lab, netns_ok):
    ns = lab.netns()
    pan, (psn,) = start_deployment(lab, ["psn1"], netns=ns)
    dev, serial = enroll_curl(lab, psn, "dev-before-cut")
    wait_for(lambda: serial in cert_list(pan, "--node", "psn1"), DRAIN_TIMEOUT,
             "dev-before-cut on the PAN")
    assert ocsp_status(lab, psn, dev) == GOOD
    assert not queue_link_alarms(pan, "psn1")

    # The cut: the PAN notices the silence and raises Queue Link Error;
    # the PSN notices the missing acks.
    ns.cut()
    t_cut = time.monotonic()
    pan.wait_state("psn1", "disconnected")
    lines = wait_for(lambda: queue_link_alarms(pan, "psn1"), LINK_TIMEOUT,
                     "a Queue Link Error alarm for psn1", detail=lambda: pan.alarms(all=True))
    assert len(lines) == 1 and re.search(r"major", lines[0], re.I), lines
    print(f"\nQueue Link Error raised {time.monotonic() - t_cut:.1f}s after the cut")
    wait_for(lambda: link_state(psn) == "disconnected", LINK_TIMEOUT,
             "psn1 to report its PAN link down", detail=lambda: psn.status().stdout)

    # Revoked on the PAN while psn1 cannot hear it.
    pan.cli("cert", "revoke", serial, "--node", "psn1", "--reason", "keyCompromise", check=True)
    assert subject_of(cert_list(pan, "--node", "psn1")[serial])[2] == "revoked"
    # psn1 runs on its own data: issues over EST, queues for the PAN,
    # answers OCSP; the revocation has not reached it.
    dev2, serial2 = enroll_curl(lab, psn, "dev-during-cut")
    assert ocsp_status(lab, psn, dev2) == GOOD
    assert serial2 in outbox_serials(psn) and outbox_waiting(psn) >= 1
    assert serial2 not in cert_list(pan)
    assert ocsp_status(lab, psn, dev) == GOOD
    assert psn.running and pan.node_state("psn1") == "disconnected"
    assert queue_link_alarms(pan, "psn1")

    # Back: revoked at psn1's responder, the alarm cleared, the outbox
    # delivered.
    # The cut lasts long enough for psn1's reconnect backoff to reach its
    # ceiling (FAULTS_CUT_SECONDS to try longer ones by hand).
    hold = CUT_SECONDS - (time.monotonic() - t_cut)
    if hold > 0:
        time.sleep(hold)
    print(f"link cut for {time.monotonic() - t_cut:.1f}s")
    ns.heal()
    t0 = time.monotonic()
    wait_for(lambda: ocsp_status(lab, psn, dev) == REVOKED, DRAIN_TIMEOUT,
             "psn1's OCSP responder to answer revoked after the link is back",
             detail=lambda: psn.status(check=False).stdout + psn.diagnostics())
    t_revoked = time.monotonic() - t0
    pan.wait_state("psn1", "connected")
    wait_for(lambda: not queue_link_alarms(pan, "psn1"), LINK_TIMEOUT,
             "the Queue Link Error alarm of psn1 to clear", detail=lambda: pan.alarms(all=True))
    t_alarm = time.monotonic() - t0
    wait_drained(psn, pan)
    t_drained = time.monotonic() - t0
    print(f"after reconnection: OCSP revoked in {t_revoked:.1f}s, alarm cleared in "
          f"{t_alarm:.1f}s, outbox drained in {t_drained:.1f}s")
    # The PAN reaped the dead connections of before the cut (ZMTP
    # heartbeats): one messaging and one events connection from psn1.
    wait_for(lambda: (pan_connections(pan, psn, MESSAGING_PORT),
                      pan_connections(pan, psn, EVENTS_PORT)) == (1, 1), LINK_TIMEOUT,
             "one messaging and one events connection from psn1 on the PAN",
             detail=lambda: run(["ss", "-tn"]).stdout)
    rows = cert_list(pan, "--node", "psn1")
    assert subject_of(rows[serial2]) == ("CN=dev-during-cut", "psn1", "good")
    assert len(rows) == NODE_CERTS + 2, rows
    hist = [ln for ln in pan.alarms(all=True).splitlines()
            if "Queue Link Error" in ln and "psn1" in ln]
    # TIME SEVERITY NODE ALARM CLEARED TEXT: raised once, cleared.
    assert "CLEARED" in pan.alarms(all=True).split("\n")[0]
    assert len(hist) == 1 and len(re.findall(r"\d{4}-\d\d-\d\dT[\d:]+Z", hist[0])) >= 2, hist


# -- a PSN killed with an undelivered outbox -----------------------------------

def test_psn_killed_with_undelivered_outbox(lab, netns_ok):
    # A long heartbeat timeout: with only the PAN's answers dropped, psn1
    # must go on believing its link up and send its outbox into it.
    ns = lab.netns()
    pan, (psn,) = start_deployment(lab, ["psn1"], netns=ns,
                                   psn_args=["--set", "heartbeat.timeout=60s"])
    k = m = 5

    # 1. What the PAN sends to psn1 is dropped (but bare TCP ACKs, so that
    #    psn1's own data keeps flowing): the PAN stores what psn1
    #    delivers, its acks are lost, the certificates stay queued.
    ns.cut_direction(to_ns=True, data_only=True)
    acked_lost = [enroll_curl(lab, psn, f"ack-lost-{i}")[1] for i in range(k)]
    wait_for(lambda: set(acked_lost) <= set(cert_list(pan, "--node", "psn1")), DRAIN_TIMEOUT,
             "the PAN to store what psn1 sent", detail=lambda: psn.diagnostics() + pan.diagnostics())
    assert set(acked_lost) <= set(outbox_serials(psn)), "the PAN's acks reached psn1"
    # 2. The whole link cut: these never reach the PAN.
    ns.cut()
    unsent = [enroll_curl(lab, psn, f"unsent-{i}")[1] for i in range(m)]
    queued = outbox_serials(psn)
    assert set(acked_lost + unsent) == set(queued) and len(queued) == k + m, queued
    assert not set(unsent) & set(cert_list(pan))

    # 3. psn1 killed, the whole process group, and started again: the
    #    outbox is on disk, exactly as it was.
    psn.kill_group()
    psn.start()
    wait_services(psn)
    assert sorted(outbox_serials(psn)) == sorted(queued)
    assert outbox_waiting(psn) == k + m
    # 4. The link back: delivery resumes; the PAN stores the unsent ones
    #    and acks again what it had, storing nothing twice.
    ns.heal_direction()
    ns.heal()
    wait_drained(psn, pan)
    rows = cert_list(pan, "--node", "psn1")
    assert len(rows) == NODE_CERTS + k + m, rows
    for s in acked_lost + unsent:
        assert subject_of(rows[s])[1:] == ("psn1", "good"), rows[s]
    known = sum(int(n) for n in re.findall(
        r"outbox of psn1: \d+ certificates, \d+ stored, (\d+) already known", pan.log_text()))
    assert known >= k, f"the PAN never acked a redelivery ({known} already known)"
    assert store_serials(psn) >= set(acked_lost + unsent)


def test_psn_sigkill_during_est_load(lab):
    # psn1's whole process group (daemon, CA service, EST server, OCSP)
    # killed while it issues and delivers; psn2 goes on.  Requests to psn1
    # fail while it is down (a client does not retry); every certificate
    # a client got is on the PAN once, and the PAN holds what psn1's
    # store holds, nothing more.
    n = max(40, ENROLLMENTS // 4)
    pan, psns = start_deployment(lab, ["psn1", "psn2"])
    psn1, psn2 = psns
    load = Load(psns, n, USER, PASSWORD)
    load.wait_done(n // 4)
    psn1.kill_group()
    load.fault()
    print(f"\npsn1 SIGKILLed after {len(load.got)} of {n} enrollments")
    load.join()
    psn1.start()
    wait_services(psn1)
    got = load.got
    for h, s, _, after in got.values():
        assert h == "psn1" and not after or h == "psn2", "psn1 answered while it was dead"
    assert all(f.split(" at ")[1].startswith("psn1") for f in load.failures), load.failures
    assert len([v for v in got.values() if v[0] == "psn2"]) == n // 2, load.failures
    print(f"{len(got)} enrollments succeeded, {len(load.failures)} failed at the dead psn1")
    for psn in psns:
        wait_drained(psn, pan)
        rows = cert_list(pan, "--node", psn.hostname)
        mine = {s for h, s, _, _ in got.values() if h == psn.hostname}
        assert mine <= set(rows), f"{psn.hostname}: not on the PAN: {mine - set(rows)}"
        held = store_serials(psn)
        assert set(rows) == held, (f"{psn.hostname}: on the PAN only {set(rows) - held}, "
                                   f"in the store only {held - set(rows)}")
