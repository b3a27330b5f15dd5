/// Files: net/smc/smc_core.c
/// Fix: 0b0e4d51c6554e5ecc3f8cc73c2eaf12da21249a
/// Fixes: 0cfdd8f92cac
/// Functions: smc_vlan_by_tcpsk
// smc: Use __sk_dst_get() and dst_dev_rcu() in smc_vlan_by_tcpsk() (no CVE id assigned)
// The vulnerable shape: a dst taken with sk_dst_get() (a reference, no RCU section) whose
// ->dev is read while the device may be unregistered and freed; the fix reads the device
// with __sk_dst_get() + dst_dev_rcu() under rcu_read_lock(), so sk_dst_get() goes.
// smcpatch reports the sk_dst_get() call of each vulnerable function (one site per function).

virtual detect

@err exists@
expression sk, E;
identifier dst;
type T;
position p;
@@

smc_vlan_by_tcpsk(...)
{
	...
(
*	T dst = sk_dst_get@p(sk);
|
*	dst = sk_dst_get@p(sk);
)
	... when != dst = E
*	dst->dev
	...
}

@script:python depends on detect@
p << err.p;
@@

coccilib.report.print_report(p[0], 'ERROR: smc_vlan_by_tcpsk-0b0e4d51c655 in ' + p[0].current_element)
