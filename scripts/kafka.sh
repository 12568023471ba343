#!/usr/bin/env bash
# Tally's local Apache Kafka: one KRaft node (broker + controller) on the machine's Java.
#
#   scripts/kafka.sh install   fetch the jars (Maven), render the config, format the storage
#   scripts/kafka.sh start     install if needed, start the broker in the background, then wait
#   scripts/kafka.sh wait      wait until the broker has started and answers on its port
#   scripts/kafka.sh stop      stop the broker that this script started
#   scripts/kafka.sh status    print running/stopped (exit 0 when running, 3 when stopped)
#
# Environment:
#   TALLY_HOME                   state folder, default <repo>/.tally (config, data, logs, pid)
#   TALLY_KAFKA_PORT             client port, default 9092
#   TALLY_KAFKA_CONTROLLER_PORT  KRaft controller port, default 9093
#   TALLY_KAFKA_LIBS             jar folder, default <repo>/.tally/kafka/libs (shared by every
#                                TALLY_HOME, so a second broker for tests needs no download)
#   TALLY_KAFKA_HEAP             JVM heap flags, default "-Xmx512m -Xms256m"
#   TALLY_KAFKA_WAIT_SECS        how long `wait` waits, default 60
#
# A second broker, e.g. for tests:
#   TALLY_HOME=/tmp/k2 TALLY_KAFKA_PORT=19092 TALLY_KAFKA_CONTROLLER_PORT=19093 scripts/kafka.sh start
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

TALLY_HOME=${TALLY_HOME:-$ROOT/.tally}
case $TALLY_HOME in /*) ;; *) TALLY_HOME=$ROOT/$TALLY_HOME ;; esac
KAFKA_PORT=${TALLY_KAFKA_PORT:-9092}
CONTROLLER_PORT=${TALLY_KAFKA_CONTROLLER_PORT:-9093}
LIBS=${TALLY_KAFKA_LIBS:-$ROOT/.tally/kafka/libs}
HEAP=${TALLY_KAFKA_HEAP:--Xmx512m -Xms256m}
WAIT_SECS=${TALLY_KAFKA_WAIT_SECS:-60}
STOP_SECS=20

POM=$ROOT/deploy/kafka/pom.xml
TEMPLATE=$ROOT/deploy/kafka/server.properties
LOG4J=$ROOT/deploy/kafka/log4j2.properties
KHOME=$TALLY_HOME/kafka
DATA=$KHOME/data
CONF=$KHOME/server.properties
CLUSTER_ID_FILE=$KHOME/cluster-id
FORMAT_PORT_FILE=$KHOME/formatted-controller-port
LOG=$TALLY_HOME/logs/kafka.log
PIDFILE=$TALLY_HOME/run/kafka.pid
# Size of kafka.log when the broker was last started: `wait` only reads what came after it.
OFFSETFILE=$TALLY_HOME/run/kafka.log-offset
# Logged (at INFO, see log4j2.properties) once the broker and controller are both serving:
#   [KafkaRaftServer nodeId=1] Kafka Server started (kafka.server.KafkaRaftServer)
READY_LINE='Kafka Server started'

say() { echo "tally: kafka: $*"; }
die() { echo "tally: kafka: error: $*" >&2; exit 1; }

java_cmd() { java -Dlog4j2.configurationFile="$LOG4J" -cp "$LIBS/*" "$@"; }

ensure_tools() {
  local missing=()
  command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  if ((${#missing[@]})); then
    say "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  local major
  major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
  [[ ${major:-0} -ge 17 ]] || die "Kafka 4 needs Java 17 or newer; 'java' is version ${major:-unknown}"
}

pom_sum() { sha256sum "$POM" | cut -d' ' -f1; }

# The jars are current when the folder holds the kafka jar and was copied for this very pom.
libs_current() {
  compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null &&
    [[ -f $LIBS/.pom.sha256 && $(cat "$LIBS/.pom.sha256") == "$(pom_sum)" ]]
}

install_libs() {
  if libs_current; then return 0; fi
  say "copying the Kafka jars from Maven into $LIBS (deploy/kafka/pom.xml)"
  local tmp=$LIBS.tmp.$$
  rm -rf "$tmp"
  mkdir -p "$(dirname "$LIBS")"
  # Copy into a fresh folder and swap it in, so an interrupted copy never looks complete.
  if ! mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
    -DoutputDirectory="$tmp" -DincludeScope=runtime >"$tmp.log" 2>&1; then
    sed 's/^/    /' "$tmp.log" >&2
    rm -rf "$tmp" "$tmp.log"
    die "mvn dependency:copy-dependencies failed (output above)"
  fi
  rm -f "$tmp.log"
  compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || { rm -rf "$tmp"; die "mvn copied no kafka_2.13 jar"; }
  pom_sum >"$tmp/.pom.sha256"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
}

render_config() {
  mkdir -p "$KHOME" "$DATA"
  local esc_data
  esc_data=$(printf '%s' "$DATA" | sed 's/[\\|&]/\\&/g')
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
      -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" \
      -e "s|@DATA_DIR@|$esc_data|g" "$TEMPLATE" >"$CONF.tmp"
  mv "$CONF.tmp" "$CONF"
}

format_storage() {
  if [[ -f $DATA/meta.properties ]]; then
    local formatted
    formatted=$(cat "$FORMAT_PORT_FILE" 2>/dev/null || echo "$CONTROLLER_PORT")
    if [[ $formatted != "$CONTROLLER_PORT" ]]; then
      say "warning: $DATA was formatted for controller port $formatted, not $CONTROLLER_PORT;" \
        "if the broker does not come up, run 'make clean-data' or use another TALLY_HOME"
    fi
    return 0
  fi
  if [[ ! -s $CLUSTER_ID_FILE ]]; then
    java_cmd kafka.tools.StorageTool random-uuid | tail -n1 >"$CLUSTER_ID_FILE.tmp"
    mv "$CLUSTER_ID_FILE.tmp" "$CLUSTER_ID_FILE"
  fi
  say "formatting $DATA (cluster id $(cat "$CLUSTER_ID_FILE"))"
  java_cmd kafka.tools.StorageTool format --standalone -t "$(cat "$CLUSTER_ID_FILE")" -c "$CONF" |
    sed -e '/^Bootstrap metadata/d' -e 's/^/tally: kafka: /'
  echo "$CONTROLLER_PORT" >"$FORMAT_PORT_FILE"
}

cmd_install() {
  ensure_tools
  install_libs
  render_config
  format_storage
  [[ ${1:-} == quiet ]] || say "installed ($(basename "$(compgen -G "$LIBS/kafka_2.13-*.jar" | head -n1)" .jar), config $CONF)"
}

# True while the process exists and is not a zombie (this machine's init reaps slowly).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

# The pid in the pid file, if that process is alive and is our broker.
running_pid() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  local args
  args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $args == *" kafka.Kafka "* ]] || return 1
  echo "$pid"
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

log_since_start() {
  local offset
  offset=$(cat "$OFFSETFILE" 2>/dev/null || echo 0)
  tail -c +"$((offset + 1))" "$LOG" 2>/dev/null || true
}

fail_with_log() {
  echo "tally: kafka: error: $*" >&2
  echo "tally: kafka: last lines of $LOG:" >&2
  log_since_start | tail -n 30 | sed 's/^/    /' >&2
  exit 1
}

cmd_wait() {
  local deadline=$((SECONDS + WAIT_SECS)) pid
  while :; do
    if pid=$(running_pid); then
      if log_since_start | grep -q "$READY_LINE" && port_open "$KAFKA_PORT"; then
        say "ready on 127.0.0.1:$KAFKA_PORT (pid $pid)"
        return 0
      fi
    elif [[ -f $PIDFILE ]]; then
      rm -f "$PIDFILE"
      fail_with_log "the broker (pid file $PIDFILE) is no longer running"
    elif port_open "$KAFKA_PORT"; then
      say "127.0.0.1:$KAFKA_PORT answers, but not from a broker this script started; using it"
      return 0
    fi
    ((SECONDS < deadline)) || fail_with_log "the broker was not ready on 127.0.0.1:$KAFKA_PORT after ${WAIT_SECS}s"
    sleep 0.5
  done
}

cmd_start() {
  local pid
  if pid=$(running_pid); then
    say "already running (pid $pid)"
    cmd_wait
    return
  fi
  rm -f "$PIDFILE"
  # A broker that was just killed can hold its ports a moment longer than its pid shows (the
  # JVM's threads exit one by one): wait up to 10 s for them before calling them taken.
  for port in "$KAFKA_PORT" "$CONTROLLER_PORT"; do
    for _ in $(seq 20); do port_open "$port" || break; sleep 0.5; done
    ! port_open "$port" || die "127.0.0.1:$port is already in use by another process"
  done
  cmd_install quiet
  mkdir -p "$TALLY_HOME/logs" "$TALLY_HOME/run"
  touch "$LOG"
  stat -c %s "$LOG" >"$OFFSETFILE"
  say "starting on 127.0.0.1:$KAFKA_PORT (log $LOG)"
  # setsid: the broker gets its own session, so a Ctrl-C aimed at make does not reach it.
  # The inner bash writes its own pid and then becomes java, so the pid file names the JVM.
  # shellcheck disable=SC2016,SC2086  # single quotes on purpose; HEAP is a list of flags
  nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
    java $HEAP -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J" -Dlog4j2.shutdownHookEnabled=false \
    -cp "$LIBS/*" kafka.Kafka "$CONF" \
    >>"$LOG" 2>&1 </dev/null &
  for _ in $(seq 50); do [[ -s $PIDFILE ]] && break; sleep 0.1; done
  [[ -s $PIDFILE ]] || fail_with_log "the broker did not start"
  cmd_wait
}

cmd_stop() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$PIDFILE"
    say "not running"
    return 0
  fi
  say "stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq $((STOP_SECS * 10))); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    say "still running after ${STOP_SECS}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.1; done
  fi
  rm -f "$PIDFILE"
  say "stopped"
}

cmd_status() {
  local pid
  if pid=$(running_pid); then
    say "running (pid $pid, 127.0.0.1:$KAFKA_PORT)"
  else
    say "stopped"
    return 3
  fi
}

case ${1:-} in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  wait) cmd_wait ;;
  *)
    echo "usage: scripts/kafka.sh install|start|stop|status|wait" >&2
    exit 2
    ;;
esac
