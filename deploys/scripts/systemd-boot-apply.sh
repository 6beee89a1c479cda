# Put the kernel arguments into /etc/kernel/cmdline, rewrite every installed kernel's boot entry with
# kernel-install and check the entries; on failure put the file back and rewrite them again.
# (halo-provision deploys/grub.py runs this file with bash on the host; do not edit there.)
#
#   HALO_FILE=/etc/kernel/cmdline HALO_NEW=<the new file, base64; empty: keep it> \
#   HALO_CHECK=<sh command: exit 0 when every boot entry has the arguments> bash systemd-boot-apply.sh
#
# Values come in as environment variables, never as shell text (HALO_CHECK is a command made of quoted
# words). The file is replaced with a dated backup beside it.
set -u

f=$HALO_FILE new=$HALO_NEW check=$HALO_CHECK backup=
entries() {
  rc=1
  for d in /lib/modules/*/; do
    k=${d%/}; k=${k##*/}
    img=/lib/modules/$k/vmlinuz; [ -e "$img" ] || img=/boot/vmlinuz-$k; [ -e "$img" ] || continue
    set -- "$k" "$img"; if [ -e "/boot/initrd.img-$k" ]; then set -- "$@" "/boot/initrd.img-$k"; fi
    kernel-install add "$@" || return 1
    rc=0
  done
  [ "$rc" = 0 ] || echo "no kernel in /lib/modules with an image in /lib/modules/<version>/vmlinuz or /boot"
  return "$rc"
}
if [ -n "$new" ]; then
  if [ -e "$f" ]; then
    backup="$f.halo-provision-$(date +%Y%m%d-%H%M%S).bak"
    while [ -e "$backup" ]; do sleep 1; backup="$f.halo-provision-$(date +%Y%m%d-%H%M%S).bak"; done
    cp -p "$f" "$backup" || exit 1
  fi
  mkdir -p "$(dirname "$f")" && printf %s "$new" | base64 -d > "$f.new" && mv "$f.new" "$f" || exit 1
  echo "$f: kernel arguments set; the previous file is ${backup:-none (there was no file)}"
fi
entries && sh -c "$check" && exit 0
if [ -n "$backup" ]; then cat "$backup" > "$f"; elif [ -n "$new" ]; then rm -f "$f"; fi
entries >/dev/null 2>&1
echo "halo-provision: kernel-install failed or the boot entries lack the arguments; restored $f${backup:+ from $backup} and rewrote the entries with it"
exit 1
