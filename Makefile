# The single entry points (README): `make run` and `make test`. Everything else is optional.
SHELL := /bin/bash
CARGO ?= cargo
NEXTEST_PROFILE ?= ci

.PHONY: run build test lint deny yocto-lint unit conformance bench deps-run deps-test clean image test-system deps-firmware

## Build and start passerelle on this machine with the embedded demo configuration:
## data under ./var, status endpoint on http://127.0.0.1:8079/healthz.
run: deps-run
	$(CARGO) build --release -p passerelle
	./target/release/passerelle run --demo

build:
	$(CARGO) build --workspace --all-targets

## Formatting, clippy -D warnings, cargo deny, then the whole suite with its real peers,
## then the conformance report (target/conformance.md) from the same run.
test: deps-test lint deny yocto-lint unit

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# The advisory database cannot be fetched from here: licenses, bans and sources only.
deny:
	$(CARGO) deny --locked check licenses bans sources

# meta-passerelle cannot be built here; it is linted. `homepageping` fetches over the
# network, and a daemon has no native variant for `bbclassextend` to ask for.
yocto-lint:
	python3 yocto/scripts/gen-crates-inc.py Cargo.lock /tmp/passerelle-crates.inc
	@diff -u yocto/meta-passerelle/recipes-core/passerelle/passerelle-crates.inc /tmp/passerelle-crates.inc \
	  || { echo "yocto: passerelle-crates.inc is stale: python3 yocto/scripts/gen-crates-inc.py Cargo.lock yocto/meta-passerelle/recipes-core/passerelle/passerelle-crates.inc"; exit 1; }
	python3 -m oelint_adv --quiet --release styhead --suppress oelint.vars.homepageping --suppress oelint.var.bbclassextend \
	  $$(find yocto/meta-passerelle -name '*.bb' -o -name '*.bbappend' | sort)

unit:
	$(CARGO) nextest run --workspace --locked --profile $(NEXTEST_PROFILE)
	$(CARGO) run -q -p xtask -- conformance target/nextest/$(NEXTEST_PROFILE)/junit.xml target/conformance.md

## The conformance report alone: runs the suite (failures included) and lists every
## requirement ID the tests name, with pass/fail.
conformance: deps-test
	-$(CARGO) nextest run --workspace --locked --profile $(NEXTEST_PROFILE) --no-fail-fast
	$(CARGO) run -q -p xtask -- conformance target/nextest/$(NEXTEST_PROFILE)/junit.xml target/conformance.md

## Benchmarks, each beside its anchor: one `BENCH <id> …` line per figure.
bench: deps-test
	$(CARGO) build --release --locked -p passerelle
	$(CARGO) run --release --locked -p passerelle-bench -- all

## A firmware image (issue #9): `make image BOARD=qemu-x86_64 VERSION=1.0.0` writes
## target/firmware/out/passerelle-BOARD-VERSION.disk (raw GPT disk) and .img (the root slot
## image the vendor publishes). See firmware/README.md.
BOARD ?= qemu-x86_64
VERSION ?= 0.1.0
image: deps-firmware
	$(CARGO) build --release --locked -p passerelle
	firmware/build-image.sh $(BOARD) $(VERSION) target/firmware/out

## The qemu A/B system test (issue #9): images 1.0.0/2.0.0/3.0.0, update, commit, power cut
## during the slot copy, failed health check and fallback. See tests/system/run.sh.
test-system: deps-firmware
	$(CARGO) build --release --locked -p passerelle
	tests/system/run.sh

deps-firmware:
	@scripts/install-deps.sh firmware

deps-run:
	@scripts/install-deps.sh run

deps-test:
	@scripts/install-deps.sh test

clean:
	$(CARGO) clean
	rm -rf var
