/// Files: net drivers/net drivers/infiniband
/// Fix: e218ae40241c162a752200efec92030d4de1b503
// Merge branch 'net-fix-uaf-of-sk_dst_get-sk-dev': the series this pattern comes from. Not a
// rule for one CVE: it finds the shape anywhere, so a site it reports is a candidate to read,
// not a known vulnerability (a site may be safe, e.g. under RTNL or holding the device).
// The shape: a device read (->dev, or dst_dev()) from a dst taken with sk_dst_get(), which
// holds a reference on the dst but not on its device: the device may be swapped for
// blackhole_netdev and freed. The fixed form is __sk_dst_get() + dst_dev_rcu() under
// rcu_read_lock(). smcpatch reports the sk_dst_get() call (one site per function).

virtual detect

@err exists@
expression sk, E;
identifier dst;
type T;
position p;
@@

(
	T dst = sk_dst_get@p(sk);
|
	dst = sk_dst_get@p(sk);
)
	... when != dst = E
(
*	dst->dev
|
*	dst_dev(dst)
)

@direct@
expression sk;
position p;
@@

*	sk_dst_get@p(sk)->dev

@script:python depends on detect@
p << err.p;
@@

coccilib.report.print_report(p[0], 'WARNING: sk_dst_get()->dev in ' + p[0].current_element)

@script:python depends on detect@
p << direct.p;
@@

coccilib.report.print_report(p[0], 'WARNING: sk_dst_get()->dev in ' + p[0].current_element)
