#!/usr/bin/env python3
"""mkrootfs.py: the root filesystem of the lab's container image, as a tar.

deploy/build-images runs this; `docker import` turns the tar into an image,
so no registry and no base image are needed.  The tree holds only what the
lab runs:

  /usr/local/bin/{pan,psn,san}      the project's executables
  /usr/bin/{openssl,curl}           for the endpoint container (BYOD, OCSP)
  every shared library `ldd` names for them, and the dynamic loader
  /bin/busybox (static) as /bin/sh and the tools the entry point uses
  /usr/local/bin/iselab-entrypoint, lab-endpoint, byod-onboard.sh
  /etc/passwd, /etc/group           a non-root user iselab (10001)
  /var/lib/iselab*                  mount points owned by that user: Docker
                                    copies the owner into a new named volume

With --base DIR (a debootstrap tree) the tree is DIR plus the project's
executables and scripts; libraries and tools come from DIR's packages.

The tar is deterministic (sorted names, fixed times and owners), so its
SHA-256, printed on stdout, says whether an image is up to date.
"""

import argparse
import hashlib
import io
import os
import re
import stat
import subprocess
import sys
import tarfile

UID = GID = 10001
USER = "iselab"
# Mount points of the named volumes (docker-compose.yml), owned by USER.
VOLUME_DIRS = ["/var/lib/iselab", "/var/lib/iselab-join", "/var/lib/iselab-trust",
               "/var/lib/iselab-endpoint"]
# Host tools the endpoint container needs, with their libraries.
TOOLS = ["/usr/bin/openssl", "/usr/bin/curl"]
BUSYBOX = "/bin/busybox"


def die(msg):
    print(f"mkrootfs: {msg}", file=sys.stderr)
    sys.exit(1)


def ldd(path):
    """Absolute paths of the shared libraries path needs (and the loader)."""
    p = subprocess.run(["ldd", path], capture_output=True, text=True)
    if p.returncode != 0:
        die(f"ldd {path} failed: {p.stderr.strip() or p.stdout.strip()}")
    libs = []
    for line in p.stdout.splitlines():
        m = re.search(r"=>\s+(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            libs.append(m.group(1))
        elif "not found" in line:
            die(f"{path}: {line.strip()}")
    return libs


class Tree:
    """Entries of the tar, by path (no leading slash)."""

    def __init__(self):
        self.entries = {}

    def _info(self, path, kind, mode, uid=0, gid=0):
        ti = tarfile.TarInfo(path.lstrip("/"))
        ti.type, ti.mode, ti.uid, ti.gid = kind, mode, uid, gid
        ti.uname = ti.gname = ""
        ti.mtime = 0
        return ti

    def _parents(self, path):
        """Directories above path that the tree lacks, root-owned 0755."""
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in self.entries:
                self.entries[parent] = (self._info(parent, tarfile.DIRTYPE, 0o755), None)

    def dir(self, path, mode=0o755, uid=0, gid=0):
        self._parents(path)
        self.entries[path.strip("/")] = (self._info(path, tarfile.DIRTYPE, mode, uid, gid), None)

    def file(self, path, data, mode=0o644):
        self._parents(path)
        ti = self._info(path, tarfile.REGTYPE, mode)
        ti.size = len(data)
        self.entries[path.strip("/")] = (ti, data)

    def copy(self, src, dst=None, mode=None):
        with open(src, "rb") as f:
            data = f.read()
        if mode is None:
            mode = stat.S_IMODE(os.stat(src).st_mode)
        self.file(dst or src, data, mode)

    def symlink(self, path, target):
        self._parents(path)
        ti = self._info(path, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.entries[path.strip("/")] = (ti, None)

    def write(self, out):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name in sorted(self.entries):
                ti, data = self.entries[name]
                tar.addfile(ti, io.BytesIO(data) if data is not None else None)
        raw = buf.getvalue()
        with open(out, "wb") as f:
            f.write(raw)
        return hashlib.sha256(raw).hexdigest()


def add_base(tree, base):
    """Every file of a debootstrap tree, with its owner and mode."""
    for root, dirs, files in os.walk(base):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            full = os.path.join(root, name)
            rel = "/" + os.path.relpath(full, base)
            st = os.lstat(full)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                tree.symlink(rel, os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                tree.dir(rel, mode, st.st_uid, st.st_gid)
            elif stat.S_ISREG(st.st_mode):
                tree.copy(full, rel, mode)
                tree.entries[rel.strip("/")][0].uid = st.st_uid
                tree.entries[rel.strip("/")][0].gid = st.st_gid
            # Device nodes and fifos: Docker provides /dev itself.


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="build dir with pan/pan, psn/psn, san/san")
    ap.add_argument("--scripts", required=True, help="the repo's deploy/ directory")
    ap.add_argument("--base", help="a debootstrap tree to start from")
    ap.add_argument("--out", required=True, help="the tar to write")
    a = ap.parse_args()

    exes = [os.path.join(a.bin, r, r) for r in ("pan", "psn", "san")]
    for e in exes:
        if not os.access(e, os.X_OK):
            die(f"no executable {e}")

    t = Tree()
    if a.base:
        add_base(t, a.base)
        needed = exes
    else:
        for d in ("/bin", "/etc", "/tmp", "/usr/bin", "/usr/local/bin", "/var/lib"):
            t.dir(d, 0o1777 if d == "/tmp" else 0o755)
        t.copy(BUSYBOX, "/bin/busybox", 0o755)
        applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True,
                                 check=True).stdout.split()
        for ap_path in applets:
            # All applets in /bin: one PATH entry finds them, whatever
            # busybox's own idea of sbin/usr/bin.
            name = os.path.basename(ap_path)
            if name != "busybox":
                t.symlink(f"/bin/{name}", "busybox")
        needed = exes + TOOLS
        for tool in TOOLS:
            t.copy(tool, tool, 0o755)
        libs = set()
        for e in needed:
            libs.update(ldd(e))
        for lib in sorted(libs):
            real = os.path.realpath(lib)
            t.copy(real, lib, 0o755)
        # OpenSSL reads OPENSSLDIR/openssl.cnf; Debian's is a symlink.
        if os.path.exists("/etc/ssl/openssl.cnf"):
            t.copy("/etc/ssl/openssl.cnf", "/usr/lib/ssl/openssl.cnf", 0o644)
        t.file("/etc/passwd", f"root:x:0:0:root:/root:/bin/sh\n"
               f"{USER}:x:{UID}:{GID}:ise-lab:/var/lib/iselab:/bin/sh\n".encode())
        t.file("/etc/group", f"root:x:0:\n{USER}:x:{GID}:\n".encode())
        # glibc resolves the compose service names through Docker's DNS.
        t.file("/etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files dns\n")
        t.dir("/root", 0o700)

    for e in exes:
        t.copy(e, "/usr/local/bin/" + os.path.basename(e), 0o755)
    t.copy(os.path.join(a.scripts, "docker", "entrypoint.sh"), "/usr/local/bin/iselab-entrypoint", 0o755)
    t.copy(os.path.join(a.scripts, "docker", "lab-endpoint.sh"), "/usr/local/bin/lab-endpoint", 0o755)
    t.copy(os.path.join(a.scripts, "byod-onboard.sh"), "/usr/local/bin/byod-onboard.sh", 0o755)
    for d in VOLUME_DIRS:
        t.dir(d, 0o750, UID, GID)
    print(t.write(a.out))


if __name__ == "__main__":
    main()
