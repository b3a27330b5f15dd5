"""What is installed on a machine, read from its root directory (``/`` or a mounted image):

- :mod:`.root`: paths of the machine at ROOT, walked inside it (links followed as that machine
  sees them, never by the host), every read and write of ROOT goes through it.
- :mod:`.runtime`: what the running kernel says (``uname -r``, /proc/modules, /proc/cmdline,
  modules_disabled), only when ROOT is ``/``; injectable, so tests fake a running kernel.
- :mod:`.kernels`: the installed kernels (``lib/modules/*``), the smc.ko modprobe would load,
  and the package that owns it (dpkg's database under ROOT).
- :mod:`.modprobe`: kmod's configuration read the way kmod reads it, and the decision whether
  smc can load (every load blocked, or only the net-pf-43 autoload).
- :mod:`.mitigation`: smcpatch's own modprobe.d file (written, refused, removed).
- :mod:`.advice`: what Debian's archive says: the version that fixed the CVE (the newest
  headers package's changelog) and whether the machine's suites offer a fixed kernel.
"""
