"""Small real ELF objects for the inspection tests, compiled with the host's gcc.

The C below imitates smc_clc_prfx_match in its vulnerable shape (sk_dst_get inlined: takes a dst
reference under __rcu_read_lock, later dst_release) and its fixed shape (__sk_dst_get/dst_dev_rcu
under the RCU read lock, no reference). Both have an unlikely branch calling a cold function, so
gcc -O2 splits off ``smc_clc_prfx_match.cold`` into .text.unlikely. The file is always compiled
under the name smc_clc.c, as in the kernel, so its DWARF compile unit is found the same way.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from smcpatch.errors import ToolMissing
from smcpatch.plumbing import hostpkg

SMC_CLC_C = r"""
struct net_device { int ifindex; };
struct dst_entry { struct net_device *dev; int refcnt; };
struct sock { struct dst_entry *sk_dst_cache; };
struct socket { struct sock *sk; };
struct smc_clc_msg_proposal_prefix { int ipv6_prefixes_cnt; int prefix; };

extern void __rcu_read_lock(void);
extern void __rcu_read_unlock(void);
extern void dst_release(struct dst_entry *dst);
extern int smc_clc_prfx_match4_rcu(struct net_device *dev, struct smc_clc_msg_proposal_prefix *p);
extern int smc_clc_prfx_match6_rcu(struct net_device *dev, struct smc_clc_msg_proposal_prefix *p);
extern void smc_warn(const char *msg, int value) __attribute__((cold));

static inline void rcu_read_lock(void) { __rcu_read_lock(); }
static inline void rcu_read_unlock(void) { __rcu_read_unlock(); }

#if defined(FIXED)
static inline struct dst_entry *__sk_dst_get(const struct sock *sk)
{
	return *(struct dst_entry *volatile *)&sk->sk_dst_cache;
}

static inline struct net_device *dst_dev_rcu(const struct dst_entry *dst)
{
	return *(struct net_device *volatile *)&dst->dev;
}

int smc_clc_prfx_match(struct socket *clcsock, struct smc_clc_msg_proposal_prefix *prop)
{
	struct net_device *dev;
	struct dst_entry *dst;
	int rc;

	rcu_read_lock();
	dst = __sk_dst_get(clcsock->sk);
	dev = dst ? dst_dev_rcu(dst) : 0;
	if (__builtin_expect(!dev, 0)) {
		smc_warn("smc: no device", prop->prefix);
		smc_warn("smc: prefix", prop->ipv6_prefixes_cnt);
		rc = -19;
		goto out;
	}
	if (!prop->ipv6_prefixes_cnt)
		rc = smc_clc_prfx_match4_rcu(dev, prop);
	else
		rc = smc_clc_prfx_match6_rcu(dev, prop);
out:
	rcu_read_unlock();
	return rc;
}
#elif defined(NOLOCK)
/* A kernel without CONFIG_PREEMPT_RCU: rcu_read_lock() leaves no call behind. */
int smc_clc_prfx_match(struct socket *clcsock, struct smc_clc_msg_proposal_prefix *prop)
{
	struct dst_entry *dst = *(struct dst_entry *volatile *)&clcsock->sk->sk_dst_cache;

	if (!dst || !dst->dev)
		return -19;
	if (!prop->ipv6_prefixes_cnt)
		return smc_clc_prfx_match4_rcu(dst->dev, prop);
	return smc_clc_prfx_match6_rcu(dst->dev, prop);
}
#elif defined(NOUNLOCK)
int smc_clc_prfx_match(struct socket *clcsock, struct smc_clc_msg_proposal_prefix *prop)
{
	struct dst_entry *dst;

	rcu_read_lock();
	dst = *(struct dst_entry *volatile *)&clcsock->sk->sk_dst_cache;
	if (!dst || !dst->dev)
		return -19;
	return smc_clc_prfx_match4_rcu(dst->dev, prop);
}
#else
static inline struct dst_entry *sk_dst_get(const struct sock *sk)
{
	struct dst_entry *dst;

	rcu_read_lock();
	dst = *(struct dst_entry *volatile *)&sk->sk_dst_cache;
	if (dst && !__atomic_add_fetch(&dst->refcnt, 1, __ATOMIC_RELAXED))
		dst = 0;
	rcu_read_unlock();
	return dst;
}

int smc_clc_prfx_match(struct socket *clcsock, struct smc_clc_msg_proposal_prefix *prop)
{
	struct dst_entry *dst = sk_dst_get(clcsock->sk);
	int rc;

	if (__builtin_expect(!dst, 0)) {
		smc_warn("smc: no dst", prop->prefix);
		smc_warn("smc: prefix", prop->ipv6_prefixes_cnt);
		rc = -107;
		goto out;
	}
	if (!dst->dev) {
		rc = -19;
		goto out_rel;
	}
	rcu_read_lock();
	if (!prop->ipv6_prefixes_cnt)
		rc = smc_clc_prfx_match4_rcu(dst->dev, prop);
	else
		rc = smc_clc_prfx_match6_rcu(dst->dev, prop);
	rcu_read_unlock();
out_rel:
	dst_release(dst);
out:
	return rc;
}
#endif

#ifdef MODINFO
/* What modpost puts into a module: .modinfo strings and the __versions table. */
struct modversion_info { unsigned long crc; char name[64 - sizeof(unsigned long)]; };
static const char __modinfo_name[] __attribute__((used, section(".modinfo"), aligned(1)))
	= "name=smc";
static const char __modinfo_vermagic[] __attribute__((used, section(".modinfo"), aligned(1)))
	= "vermagic=6.1.0-50-amd64 SMP preempt mod_unload modversions ";
static const char __modinfo_srcversion[] __attribute__((used, section(".modinfo"), aligned(1)))
	= "srcversion=0123456789ABCDEF012345";
static const struct modversion_info ____versions[]
__attribute__((used, section("__versions"), aligned(32))) = {
	{ 0x1d24c881, "__rcu_read_lock" },
	{ 0x8d522714, "__rcu_read_unlock" },
	{ 0xdeadbeef, "dst_release" },
};
#endif
"""

#: Three functions for the kpatch-style comparison; ``VARIANT`` makes f_first bigger (so every
#: later function moves) and adds a string literal before the others' strings (so their string
#: offsets move too). f_third calls the static f_second directly (a relocation-less call whose
#: displacement changes when things move) and uses a static variable and a string.
CHANGES_C = r"""
extern int printk(const char *fmt, ...);
extern void *kmalloc(unsigned long size, int flags);

static int counter;

int f_first(int x)
{
#ifdef VARIANT
	printk("f_first got %d\n", x);
	x = x * 7 + 3;
	if (x > 100)
		x = printk("big %d\n", x);
#endif
	return x + 1;
}

__attribute__((noinline)) static int f_second(int *p, int n)
{
	int s = 0;
	for (int i = 0; i < n; i++)
		s += p[i] * (i + 1);
	counter += s;
	return s;
}

int f_third(int *p, int n)
{
	int r = f_second(p, n);
	if (r < 0)
		printk("f_third: negative %d\n", r);
	return r + counter + (kmalloc(16, 0) != 0);
}
"""

OTHER_C = r"""
int smc_clc_something_else(int a, int b) { return a * b + 1; }
"""


def require_tool(command: str, package: str) -> str:
    """The tool's path: installed through hostpkg as root (a fresh machine has no gcc), else a
    skip that says what is missing."""
    try:
        hostpkg.ensure([hostpkg.Tool(command, package)], "test tools")
    except ToolMissing as exc:
        pytest.skip(exc.one_line())
    path = shutil.which(command)
    assert path is not None
    return path


def require_gcc() -> str:
    return require_tool("gcc", "gcc")


def compile_c(
    workdir: Path,
    source: str,
    out_name: str,
    *,
    debug: bool = True,
    defines: tuple[str, ...] = (),
    kernel_model: bool = True,
    filename: str = "smc_clc.c",
) -> Path:
    """Compile ``source`` (saved as ``filename`` in a fresh directory) to ``workdir/out_name``.

    kernel_model: -fno-pie -mcmodel=kernel like kernel code (absolute R_X86_64_32S references
    to strings); without it gcc's default PIE code refers to them PC-relatively via .LC labels.
    """
    gcc = require_gcc()
    srcdir = workdir / f"src-{out_name}"
    srcdir.mkdir(parents=True, exist_ok=True)
    src = srcdir / filename
    src.write_text(source)
    out = workdir / out_name
    cmd = [gcc, "-c", "-O2", "-fno-stack-protector", "-o", str(out), str(src)]
    if debug:
        cmd.insert(2, "-g")
    if kernel_model:
        cmd[2:2] = ["-fno-pie", "-mcmodel=kernel"]
    cmd[2:2] = [f"-D{d}" for d in defines]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=srcdir)
    if proc.returncode != 0:
        raise AssertionError(f"gcc failed: {' '.join(cmd)}\n{proc.stderr}")
    return out


def strip_debug(obj: Path, out: Path) -> Path:
    """Like Debian's shipped modules: no DWARF, symbols and relocations kept."""
    strip = require_tool("strip", "binutils")
    subprocess.run([strip, "--strip-debug", "-o", str(out), str(obj)], check=True)
    return out


def link_relocatable(out: Path, *objs: Path) -> Path:
    """``ld -r`` the objects into one, as kbuild links a module's objects into smc.ko."""
    ld = require_tool("ld", "binutils")
    subprocess.run([ld, "-r", "-o", str(out), *map(str, objs)], check=True)
    return out


def xz_copy(obj: Path) -> Path:
    out = obj.with_name(obj.name + ".xz")
    out.write_bytes(lzma.compress(obj.read_bytes(), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32))
    return out


def gz_copy(obj: Path) -> Path:
    out = obj.with_name(obj.name + ".gz")
    out.write_bytes(gzip.compress(obj.read_bytes()))
    return out


def zst_copy(obj: Path) -> Path:
    zstd = require_tool("zstd", "zstd")
    out = obj.with_name(obj.name + ".zst")
    subprocess.run([zstd, "-q", "-f", "-o", str(out), str(obj)], check=True)
    return out


#: Cross compilers for the other machines the inspector reads: (command, Debian package).
CROSS_GCC = {
    "aarch64": ("aarch64-linux-gnu-gcc-12", "gcc-12-aarch64-linux-gnu"),
    "s390x": ("s390x-linux-gnu-gcc-12", "gcc-12-s390x-linux-gnu"),
}


def compile_cross(
    workdir: Path,
    arch: str,
    source: str,
    out_name: str,
    *,
    debug: bool = True,
    defines: tuple[str, ...] = (),
    filename: str = "smc_clc.c",
) -> Path:
    """Like :func:`compile_c` with a Debian cross gcc (``arch``: a :data:`CROSS_GCC` key):
    an AArch64 or a big-endian s390x object, -fno-pie as kernel code."""
    command, package = CROSS_GCC[arch]
    gcc = require_tool(command, package)
    srcdir = workdir / f"src-{out_name}"
    srcdir.mkdir(parents=True, exist_ok=True)
    src = srcdir / filename
    src.write_text(source)
    out = workdir / out_name
    cmd = [gcc, "-c", "-O2", "-fno-pie", "-fno-stack-protector", *(f"-D{d}" for d in defines),
           *(["-g"] if debug else []), "-o", str(out), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=srcdir)
    if proc.returncode != 0:
        raise AssertionError(f"{command} failed: {' '.join(cmd)}\n{proc.stderr}")
    return out
