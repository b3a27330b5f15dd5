"""smcpatch: is this kernel's SMC module fixed against CVE-2025-40168, and what does the fix
cost?"""

__version__ = "0.2.0"
