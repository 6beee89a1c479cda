# Put the kernel arguments into GRUB's defaults file, regenerate grub.cfg and check it; undo both on failure.
# (halo-provision deploys/grub.py runs this file with bash on the host; do not edit there.)
#
#   HALO_FILE=/etc/default/grub HALO_CFG=/boot/grub/grub.cfg HALO_NEW=<the new file, base64; empty: keep it> \
#   HALO_CHECK=<sh command: exit 0 when grub.cfg's default entry has the arguments> bash grub-apply.sh
#
# Values come in as environment variables, never as shell text (HALO_CHECK is a command made of quoted
# words). The file is replaced only after the new text parses as sh, with a dated backup beside it.
set -u

f=$HALO_FILE cfg=$HALO_CFG new=$HALO_NEW check=$HALO_CHECK backup=
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
if [ -f "$cfg" ]; then cp -p "$cfg" "$work/grub.cfg" || exit 1; fi
if [ -n "$new" ]; then
  printf %s "$new" | base64 -d > "$work/new" || exit 1
  if ! sh -n "$work/new"; then echo "halo-provision: the edited $f does not parse as sh; nothing changed"; exit 1; fi
  backup="$f.halo-provision-$(date +%Y%m%d-%H%M%S).bak"
  while [ -e "$backup" ]; do sleep 1; backup="$f.halo-provision-$(date +%Y%m%d-%H%M%S).bak"; done
  cp -p "$f" "$backup" && cat "$work/new" > "$f" || exit 1
  echo "$f: kernel arguments set; the previous file is $backup"
fi
if command -v update-grub >/dev/null 2>&1; then update-grub; else grub-mkconfig -o "$cfg"; fi \
  && sh -c "$check" && exit 0
rm -f "$cfg.new"
if [ -f "$work/grub.cfg" ]; then cp -p "$work/grub.cfg" "$cfg"; else rm -f "$cfg"; fi
if [ -n "$backup" ]; then
  cat "$backup" > "$f"
  echo "halo-provision: regenerating $cfg failed or it lacks the arguments; restored $f from $backup and $cfg as it was"
else
  echo "halo-provision: regenerating $cfg failed or it lacks the arguments; restored $cfg as it was"
fi
exit 1
