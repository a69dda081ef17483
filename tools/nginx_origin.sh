#!/bin/sh
# Serve loadgen's generated page set with Debian's nginx on 127.0.0.1:PORT around ONE command, then stop it.
#
#   tools/nginx_origin.sh [-p PORT] [-n PAGES] [-s SEED] [-m MIN_KB] -- COMMAND [ARGS...]
#
# Writes the page set (tools/loadgen.py --write-site) and a minimal nginx config into a fresh temporary
# directory (no system config is read or changed; nginx runs as this user with `-p` and `-c` pointing
# there), starts nginx, writes the URL list to $NGINX_URLS and exports it, runs COMMAND (the literal
# string {urls} in its arguments is replaced by that path), then stops nginx and removes the directory,
# whatever COMMAND's outcome. Exit status: COMMAND's.
#
#   tools/nginx_origin.sh -p 8099 -- .venv/bin/python tools/loadgen.py --spawn --urls {urls} --compare
#
# Needs /usr/sbin/nginx (apt-get install nginx-light). Nothing in the test suite depends on it.
set -eu

PORT=8099
PAGES=200
SEED=1
MINKB=10
while [ $# -gt 0 ]; do
    case "$1" in
        -p) PORT=$2; shift 2 ;;
        -n) PAGES=$2; shift 2 ;;
        -s) SEED=$2; shift 2 ;;
        -m) MINKB=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "usage: $0 [-p PORT] [-n PAGES] [-s SEED] [-m MIN_KB] -- COMMAND [ARGS...]" >&2; exit 2 ;;
    esac
done
[ $# -gt 0 ] || { echo "$0: no command given" >&2; exit 2; }
NGINX=${NGINX:-/usr/sbin/nginx}
[ -x "$NGINX" ] || { echo "$0: $NGINX not found (apt-get install nginx-light)" >&2; exit 2; }

HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
[ -x "$HERE/../.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && PY=$HERE/../.venv/bin/python
TMP=$(mktemp -d /tmp/nginx_origin.XXXXXX)
# nginx's workers may run as "nobody" when started by root: they must be able to read the site.
chmod 755 "$TMP"

stop() {
    if [ -f "$TMP/nginx.pid" ]; then
        pid=$(cat "$TMP/nginx.pid")
        kill -QUIT "$pid" 2>/dev/null || true
        # Bounded wait for a graceful exit, then force.
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap stop EXIT
trap 'exit 130' INT TERM

"$PY" "$HERE/loadgen.py" --write-site "$TMP/site" --pages "$PAGES" --seed "$SEED" --min-kb "$MINKB" >/dev/null
sed "s|^|http://127.0.0.1:$PORT|" "$TMP/site/paths.txt" >"$TMP/urls.txt"

# Minimal config: one worker process (the box has 2 cores and the daemon needs them), static files from
# memory-cached pages via sendfile, long keep-alive so clients reuse connections, no access log.
cat >"$TMP/nginx.conf" <<EOF
daemon on;
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    gzip_static on;  # the .gz twins --write-site writes: pages travel compressed, as from news sites
    tcp_nopush on;
    keepalive_timeout 120s;
    keepalive_requests 1000000;
    types { text/html html; }
    default_type application/octet-stream;
    charset utf-8;
    client_body_temp_path $TMP/tmp_body;
    proxy_temp_path $TMP/tmp_proxy;
    fastcgi_temp_path $TMP/tmp_fastcgi;
    uwsgi_temp_path $TMP/tmp_uwsgi;
    scgi_temp_path $TMP/tmp_scgi;
    server {
        listen 127.0.0.1:$PORT backlog=4096;
        root $TMP/site;
    }
}
EOF
"$NGINX" -p "$TMP" -c "$TMP/nginx.conf" -e "$TMP/error.log"
export NGINX_URLS="$TMP/urls.txt"

# Substitute {urls} in the command's arguments.
n=$#
while [ $n -gt 0 ]; do
    a=$1; shift
    [ "$a" = "{urls}" ] && a=$NGINX_URLS
    set -- "$@" "$a"
    n=$((n - 1))
done
status=0
"$@" || status=$?
exit $status
