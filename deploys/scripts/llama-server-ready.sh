# Wait for llama-server to answer 200 at its /health URL; fail early when its unit stopped or crashed,
# with the unit's journal. (halo-provision deploys/head.py runs this file with bash on the head.)
#
#   HALO_URL=http://10.151.0.11:8080/health HALO_UNIT=halo-llama-server.service HALO_TIMEOUT_S=600 \
#   HALO_EVERY_S=15 bash llama-server-ready.sh
#
# Values come in as environment variables, never as shell text. A progress line every HALO_EVERY_S seconds.
set -u

url=$HALO_URL unit=$HALO_UNIT timeout=$HALO_TIMEOUT_S every_s=$HALO_EVERY_S
start=$(date +%s) shown=-1
restarts=$(systemctl show -p NRestarts --value "$unit")
while :; do
    code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$url" || true)
    took=$(( $(date +%s) - start ))
    if [ "$code" = 200 ]; then echo "llama-server answers $url with 200 after $took s"; exit 0; fi
    state=$(systemctl show -p ActiveState --value "$unit")/$(systemctl show -p SubState --value "$unit")
    case "$state" in
        failed/*|inactive/*) reason="$unit stopped ($state)"; break ;;
        */auto-restart) reason="llama-server exited and systemd is about to restart it ($state)"; break ;;
    esac
    if [ "$(systemctl show -p NRestarts --value "$unit")" != "$restarts" ]; then
        reason="llama-server exited and systemd restarted it ($state)"; break
    fi
    if [ "$took" -ge "$timeout" ]; then
        reason="$url did not answer 200 within head_ready_timeout_s = $timeout s (last: ${code:-none}, $state)"
        case "$state" in
            */start-pre) reason="$reason: llama-server is not started, it waits for its RPC servers" ;;
        esac
        break
    fi
    if [ $(( took / every_s )) -ne "$shown" ]; then
        shown=$(( took / every_s ))
        echo "waiting for llama-server to load the model: /health ${code} ($state) after $took s"
    fi
    sleep 2
done
echo "llama-server is not ready: $reason. Its last journal lines:" >&2
journalctl -u "$unit" -n 40 --no-pager -o cat >&2
exit 1
