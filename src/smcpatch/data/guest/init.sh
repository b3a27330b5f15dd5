#!/bin/busybox sh
# /init of the smcpatch benchmark initramfs (busybox-static + the 9p/virtio modules).
# Mounts the host root read-only over 9p (tag "hostroot"), a writable results share (tag
# "results") at /run/smcb/results, and runs /run/smcb/results/guest.sh (written by the host)
# chrooted into the host root. Always powers off; with -no-reboot a panic also ends QEMU.
/bin/busybox mkdir -p /proc /sys /dev /newroot /bin
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

fail() {
	echo "SMCB-INIT-FAIL: $*"
	echo "SMCB-EXIT 125"
	poweroff -f
	sleep 5
	echo o > /proc/sysrq-trigger
}

for m in $(cat /modules.order); do
	insmod "/modules/$m" || fail "insmod $m"
done
MS=msize=512000
mount -t 9p -o ro,trans=virtio,version=9p2000.L,cache=loose,$MS hostroot /newroot \
	|| fail "mount hostroot"
mount -t tmpfs -o mode=755 tmpfs /newroot/run || fail "tmpfs /run"
mkdir -p /newroot/run/smcb/results /newroot/run/smcb/tmp
mount -t 9p -o trans=virtio,version=9p2000.L,$MS results /newroot/run/smcb/results \
	|| fail "mount results"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mount -t tmpfs tmpfs /newroot/dev/shm 2>/dev/null
# The kernel's modprobe helper runs in pid 1's root (this initramfs): hop into the host root,
# where the guest script puts /run/smcb/modprobe (kmod pointed at the unpacked module tree).
printf '#!/bin/sh\nexec /bin/chroot /newroot /run/smcb/modprobe "$@"\n' > /bin/smcb-modprobe
chmod 755 /bin/smcb-modprobe
echo /bin/smcb-modprobe > /proc/sys/kernel/modprobe
echo "SMCB-INIT-DONE $(cut -d' ' -f1 /proc/uptime)"
chroot /newroot /bin/sh /run/smcb/results/guest.sh
rc=$?
echo "SMCB-EXIT $rc"
sync
umount /newroot/run/smcb/results 2>/dev/null
poweroff -f
sleep 5
echo o > /proc/sysrq-trigger
