"""The app supervisor the toolkit installs on every host as `<deploy_to>/bin/app`: one POSIX
sh script (setsid, awk, od and /proc), rewritten on every release. Two jobs, both about acting
on exactly what was meant:

- **The app's environment is shared/.env read by the project's dotenv dialect**: python-dotenv's
  rules, as `deploy/envs/` reads and writes them, without `${VAR}` expansion. Quotes, escapes,
  inline comments, `export `, CRLF line ends and multi-line quoted values come out as
  python-dotenv gives them. What the dialect cannot carry into an environment (a line it cannot
  parse, a name that is not a variable name, a name without `=`, a NUL byte, text that is not
  UTF-8) stops the start naming the file, the line and the name (never the value), before the
  running app is touched. The parser is DOTENV_AWK, checked against python-dotenv itself
  (tests/test_dotenv_dialect.py).
- **It signals only its own process group.** `run/app.pid` holds the pid and, on a second line,
  the process's start time (field 22 of /proc/PID/stat, fixed at fork), the boot id and a random
  token the app carries in its environment (DEPLOY_APP_TOKEN). The pid is this app's only when
  the boot is the same and the process with that pid started at that tick (after a reboot, or
  with the pid reused, it is someone else's); when the leader is gone, only a member of its group
  whose environment can be read and carries the token. An unreadable environment proves nothing.
  `stop` removes a stale pidfile and leaves its process alone. A one-line pidfile (written by the
  supervisor before this one) is trusted only when the leader's environment can be read and
  carries DEPLOY_APP_ROOT=<deploy_to>, so an upgrade can still stop the app it finds.
"""

from __future__ import annotations

# python-dotenv's parser (dotenv/parser.py, 1.2.x) over bytes (LC_ALL=C). Python's `\s` is
# spelled out as the UTF-8 forms of every character str.isspace() accepts (ws() and W3); the
# file is taken as Python's text mode reads it (UTF-8, a leading BOM dropped, CRLF and CR made
# LF); in quotes a backslash takes the next character (the regex `\\.`) and only the escapes
# python-dotenv decodes are decoded; unquoted values lose a ` #...` comment and trailing
# whitespace. Prints one shell-quoted `KEY=value` word per binding, or names the line (`at`)
# and exits 1. It holds no single quote: it travels inside one in the script.
DOTENV_AWK = r'''function ws(x, i,   c, t) {
  c = substr(x, i, 1)
  if (c != "" && index(" \t\v\f\034\035\036\037", c)) return 1
  if (c == "\302") { t = substr(x, i, 2); return (t == "\302\205" || t == "\302\240") ? 2 : 0 }
  if (c == "\341" || c == "\342" || c == "\343") { t = substr(x, i, 3); if (index(W3, "|" t "|")) return 3 }
  return 0
}
function skip(x, i,   k) { while ((k = ws(x, i)) > 0) i += k; return i }
function fail(what) { printf "%s line %d: %s\n", F, at, what > "/dev/stderr"; bad = 1; exit 1 }
function sq(x,   r, i) {
  r = ""
  while ((i = index(x, "\047")) > 0) { r = r substr(x, 1, i - 1) "\047\\\047\047"; x = substr(x, i + 1) }
  return "\047" r x "\047"
}
function quoted(qc,   q, c, d, v, from) {
  q = p + 1; v = ""; from = q
  for (;;) {
    if (q > n) fail(key " has a quoted value that is never closed")
    c = substr(s, q, 1)
    if (c == qc) break
    if (c == "\n") { line++; q++; continue }
    if (c != "\\") { q++; continue }
    if (q == n) fail(key " has a quoted value that is never closed")
    d = substr(s, q + 1, 1)
    v = v substr(s, from, q - from)
    if (d == "\\" || d == "\047") v = v d
    else if (qc == "\047") v = v c d
    else if (d == "\"") v = v d
    else if (d == "n") v = v "\n"
    else if (d == "t") v = v "\t"
    else if (d == "r") v = v "\r"
    else if (d == "a") v = v "\007"
    else if (d == "b") v = v "\010"
    else if (d == "f") v = v "\014"
    else if (d == "v") v = v "\013"
    else v = v c d
    if (d == "\n") line++
    q += 2; from = q
  }
  v = v substr(s, from, q - from)
  p = q + 1
  return v
}
function unquoted(   q, part, m, i, j, last) {
  q = index(substr(s, p), "\n")
  q = q ? p + q - 1 : n + 1
  part = substr(s, p, q - p); p = q
  m = length(part)
  for (i = 1; i <= m; ) {
    if (!ws(part, i)) { i++; continue }
    j = skip(part, i)
    if (substr(part, j, 1) == "#") { part = substr(part, 1, i - 1); break }
    i = j
  }
  m = length(part); last = 0
  for (i = 1; i <= m; ) { j = ws(part, i); if (j) i += j; else last = i++ }
  return substr(part, 1, last)
}
BEGIN {
  W3 = "|\341\232\200|\342\200\250|\342\200\251|\342\200\257|\342\201\237|\343\200\200|"
  for (i = 128; i <= 138; i++) W3 = W3 "\342\200" sprintf("%c", i) "|"
  U = "^([\001-\177]|[\302-\337][\200-\277]|\340[\240-\277][\200-\277]|[\341-\354\356\357][\200-\277][\200-\277]|" \
      "\355[\200-\237][\200-\277]|\360[\220-\277][\200-\277][\200-\277]|[\361-\363][\200-\277][\200-\277][\200-\277]|" \
      "\364[\200-\217][\200-\277][\200-\277])*$"
}
{
  if (!bad && $0 !~ U) { at = NR; fail("is not UTF-8 text") }
  s = s $0 "\n"
}
END {
  if (bad) exit 1
  if (substr(s, 1, 3) == "\357\273\277") s = substr(s, 4)
  gsub(/\r\n/, "\n", s); gsub(/\r/, "\n", s)
  n = length(s); p = 1; line = 1; out = ""
  while (p <= n) {
    for (;;) { if (substr(s, p, 1) == "\n") { p++; line++ } else if ((k = ws(s, p)) > 0) p += k; else break }
    if (p > n) break
    at = line; key = "the line"
    if (substr(s, p, 6) == "export" && ws(s, p + 6)) p = skip(s, p + 6)
    c = substr(s, p, 1); named = c != "#"
    if (c == "\047") {
      q = index(substr(s, p + 1), "\047")
      if (q < 2) fail("a quoted name is never closed")
      key = substr(s, p + 1, q - 1); p += q + 1
      line += gsub(/\n/, "\n", key)
    } else if (named) {
      for (q = p; q <= n; q++) { c = substr(s, q, 1); if (c == "=" || c == "#" || c == "\n" || ws(s, q)) break }
      if (q == p) fail("cannot be parsed as KEY=value")
      key = substr(s, p, q - p); p = q
    }
    p = skip(s, p); set = 0
    if (substr(s, p, 1) == "=") {
      set = 1; e = p; p = skip(s, p + 1); c = substr(s, p, 1)
      if (p > e + 1 && c == "#") val = ""
      else if (c == "\047" || c == "\"") val = quoted(c)
      else if (c == "" || c == "\n") val = ""
      else val = unquoted()
    }
    q = skip(s, p)
    if (substr(s, q, 1) == "#") { p = index(substr(s, q), "\n"); p = p ? q + p - 1 : n + 1 }
    p = skip(s, p)
    if (substr(s, p, 1) == "\n") { p++; line++ }
    else if (p <= n) fail(key " has more after its value (quote the value, or start a comment with \" #\")")
    if (!named) continue
    if (!set) fail(key " has no \"=\" (write " key "= for an empty value)")
    if (key !~ /^[A-Za-z_][A-Za-z0-9_]*$/) fail("\"" key "\" is not a variable name (letters, digits and _, not starting with a digit)")
    out = out " " sq(key "=" val)
  }
  printf "%s", out
}
'''

_SCRIPT = r'''#!/bin/sh
# The app supervisor the deploy toolkit installs as <deploy_to>/bin/app (rewritten on every
# release; do not edit). It needs POSIX sh, setsid, awk, od and /proc.
#
#   app start|restart PORT_VAR PORT -- ARGV...  check shared/.env, stop the app, then start ARGV in
#                                               <deploy_to>/current in its own session (run/app.pid)
#   app stop                                    TERM the app's process group; KILL what is left after 10 s
#   app status                                  "running PID" (exit 0) or "stopped" (exit 3)
#   app check-env                               exit 1 naming the line when shared/.env cannot reach the app as written
#   app run PORT_VAR PORT -- ARGV...            exec ARGV with the app's environment (a systemd unit runs this)
#   app --slot PORT ACTION ...                  the same for the app of one port of the proxy's pair (run/app-PORT.pid)
#
# The app's environment is explicit: PATH (node_modules/.bin first), HOME, LANG, the variables
# of shared/.env (python-dotenv's dialect, no ${VAR} expansion), then PORT_VAR=PORT,
# DEPLOY_APP_ROOT and DEPLOY_APP_TOKEN (which win over shared/.env); nothing else of the SSH
# session. Output goes to logs/app.log. The pid in run/app.pid is acted on only when it is
# provably the process this script started (see app_pid).
set -u
root=$(cd "$(dirname "$0")/.." && pwd -P) || exit 1
export DEPLOY_APP_ROOT="$root"
pidfile="$root/run/app.pid"
log="$root/logs/app.log"
envfile="$root/shared/.env"
'''

_BODY = r'''
# The variables of shared/.env as shell-quoted KEY=value words (nothing when there is no file);
# exit 1 with the line and the name on stderr when the dialect cannot carry them to the app.
env_words() {
  [ -e "$envfile" ] || [ -L "$envfile" ] || return 0
  [ -f "$envfile" ] && [ -r "$envfile" ] || { echo "$envfile cannot be read" >&2; return 1; }
  [ "$(tr -d '\000' < "$envfile" | wc -c)" -eq "$(wc -c < "$envfile")" ] ||
    { echo "$envfile holds a NUL byte, which no environment variable can carry" >&2; return 1; }
  LC_ALL=C awk -v F="$envfile" "$DOTENV_AWK" "$envfile"
}

# "state pgrp starttime" of process $1 (/proc/PID/stat fields 3, 5, 22: after the last ") ").
stat_of() {
  read -r s 2>/dev/null < "/proc/$1/stat" || return 1
  s=${s##*) }
  set -- $s
  [ $# -ge 20 ] || return 1
  echo "$1 $3 ${20}"
}

boot_id() { cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo -; }

# Any process of group $1 that is not a zombie.
group_alive() {
  g=$1
  for f in /proc/[0-9]*/stat; do
    read -r s 2>/dev/null < "$f" || continue
    s=${s##*) }
    set -- $s
    [ "$3" = "$g" ] && [ "$1" != Z ] && return 0
  done
  return 1
}

# The environment of process $1 (readable: same user, dumpable) holds the line $2.
environ_has() {
  envs=$(tr '\000' '\n' < "/proc/$1/environ" 2>/dev/null) || return 1
  printf '%s\n' "$envs" | grep -qxF -- "$2"
}

# A live member of group $1 carries token $2 in its environment.
member_has_token() {
  g=$1 t=$2
  [ -n "$t" ] || return 1
  for f in /proc/[0-9]*/stat; do
    read -r s 2>/dev/null < "$f" || continue
    s=${s##*) }
    set -- $s
    m=${f#/proc/}; m=${m%/stat}
    [ "$3" = "$g" ] && [ "$1" != Z ] && environ_has "$m" "DEPLOY_APP_TOKEN=$t" && return 0
  done
  return 1
}

# The app's pid when run/app.pid names a live process group this supervisor started; else
# nothing (exit 1). Never judged by anything another process could have by chance.
app_pid() {
  pid= start= boot= tok=
  { read -r pid; read -r start boot tok; } < "$pidfile" 2>/dev/null
  case $pid in ''|*[!0-9]*) return 1 ;; esac
  if [ -n "$start" ]; then
    [ "$boot" = "$(boot_id)" ] || return 1                 # written before a reboot
    if st=$(stat_of "$pid"); then
      [ "${st##* }" = "$start" ] || return 1              # the pid now belongs to another process
    else
      member_has_token "$pid" "$tok" || return 1           # the leader is gone: its group carries the token
    fi
  else
    environ_has "$pid" "DEPLOY_APP_ROOT=$root" || return 1 # a pidfile of the supervisor before this one
  fi
  group_alive "$pid" || return 1
  echo "$pid"
}

stop() {
  if pid=$(app_pid); then
    kill -TERM -"$pid" 2>/dev/null
    i=0
    while [ -n "$(app_pid)" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    if [ -n "$(app_pid)" ]; then
      kill -KILL -"$pid" 2>/dev/null
      i=0
      while [ -n "$(app_pid)" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    fi
    echo "stopped $pid"
  fi
  rm -f "$pidfile"
}

start() {
  [ $# -ge 4 ] && [ "$3" = -- ] || { echo "usage: app start PORT_VAR PORT -- ARGV..." >&2; exit 2; }
  command -v setsid >/dev/null 2>&1 || { echo "setsid is not installed on this host (util-linux)" >&2; exit 1; }
  # Before anything stops: an environment the app cannot get as written leaves the running app alone.
  env_words >/dev/null || { echo "the app was not restarted: fix $envfile" >&2; exit 1; }
  tok=$(od -An -N16 -tx1 /dev/urandom 2>/dev/null | tr -d ' \n')
  [ ${#tok} -eq 32 ] || { echo "cannot read /dev/urandom" >&2; exit 1; }
  stop >/dev/null
  mkdir -p "$root/run" "$root/logs"
  cd "$root/current" || { echo "no release: $root/current is missing" >&2; exit 1; }
  printf -- '--- %s starting %s on port %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(cat RELEASE 2>/dev/null)" "$2" >> "$log"
  # In the background of a non-interactive shell the child is no group leader, so setsid
  # makes it one without forking: $! is the app's pid, session and process group.
  DEPLOY_APP_TOKEN=$tok setsid "$root/bin/app" run "$@" < /dev/null >> "$log" 2>&1 &
  pid=$!
  # Its start time is fixed at fork and readable until this shell reaps it.
  if st=$(stat_of "$pid"); then
    printf '%s\n%s %s %s\n' "$pid" "${st##* }" "$(boot_id)" "$tok" > "$pidfile.new" && mv -f "$pidfile.new" "$pidfile"
  fi
  # Return once the child leads its own process group (setsid has run), so a status or stop
  # right after this sees the app; or once it is gone.
  i=0
  while [ $i -lt 500 ] && st=$(stat_of "$pid") && [ "${st%% *}" != Z ] && ! group_alive "$pid"; do
    sleep 0.01; i=$((i + 1))
  done
  echo "started $pid"
}

run() {
  port_var=$1 port=$2
  shift 3
  cd "$root/current" || exit 1
  here=$(pwd -P)   # this release, not whatever `current` points to later
  exec env -i "PATH=$here/node_modules/.bin:${PATH:-/usr/local/bin:/usr/bin:/bin}" "HOME=${HOME:-/}" \
    "LANG=${LANG:-C.UTF-8}" "DEPLOY_APP_ROOT=$root" ${DEPLOY_APP_TOKEN:+"DEPLOY_APP_TOKEN=$DEPLOY_APP_TOKEN"} \
    "$root/bin/app" _exec "$port_var" "$port" -- "$@"
}

# With a clean environment: the variables of shared/.env, then the port and the markers, then
# the app. They go to env(1) as arguments, never through this shell's own variables.
_exec() {
  port_var=$1 port=$2
  shift 3
  words=$(env_words) || exit 1
  set -- "$port_var=$port" "DEPLOY_APP_ROOT=$root" ${DEPLOY_APP_TOKEN:+"DEPLOY_APP_TOKEN=$DEPLOY_APP_TOKEN"} "$@"
  eval "exec env $words \"\$@\""
}

# `app --slot PORT ACTION ...`: the app on one port of the proxy's pair (deploy/hosts/_slots.py), with its
# own pidfile, so a release starts beside the live app instead of replacing it.
if [ "${1:-}" = --slot ]; then
  case ${2:-} in ''|*[!0-9]*) echo "usage: app --slot PORT start|restart|stop|status ..." >&2; exit 2 ;; esac
  pidfile="$root/run/app-$2.pid"
  shift 2
fi
cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  start | restart) start "$@" ;;
  stop) stop ;;
  status) if pid=$(app_pid); then echo "running $pid"; else echo stopped; exit 3; fi ;;
  check-env) env_words >/dev/null || exit 1 ;;
  run) run "$@" ;;
  _exec) _exec "$@" ;;
  *) echo "usage: app start|restart|stop|status|check-env|run" >&2; exit 2 ;;
esac
'''

assert "'" not in DOTENV_AWK
SUPERVISOR = _SCRIPT + "DOTENV_AWK='" + DOTENV_AWK + "'\n" + _BODY
APP_STOPPED_EXIT = 3
