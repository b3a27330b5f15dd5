"""The vulnerability smcpatch answers for, stated once."""

from __future__ import annotations

CVE = "CVE-2025-40168"
CWE = "CWE-416"
CWE_NAME = "Use After Free"
TITLE = "net/smc: smc_clc_prfx_match() use-after-free of dst->dev"
DESCRIPTION = ("net/smc: smc_clc_prfx_match() reads dst->dev outside RCU after sk_dst_get(), a "
               "use-after-free of the net_device (fixed upstream by 235f81045c00)")
UPSTREAM_FIX = ("235f81045c00 (\"smc: Use __sk_dst_get() and dst_dev_rcu() in "
                "smc_clc_prfx_match()\")")
# the first Debian version of each series whose changelog names the fix
DEBIAN_FIXED = {"6.1": "6.1.187-1", "6.12": "6.12.111-1"}
