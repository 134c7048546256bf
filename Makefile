# sv72 — common tasks. `make demo` runs the pipeline on the embedded demo set; `make test` runs the tests.
CARGO   ?= cargo
PROFILE ?= release
SV72    := $(CARGO) run --quiet --profile $(PROFILE) --locked --bin sv72 --
DEMO    ?= datasets/demo

.PHONY: all build demo test bench lint fmt clean-demo

all: build

build:
	$(CARGO) build --profile $(PROFILE) --locked

# The main job on the embedded default: generate the demo scenes, ingest them, build the mix.
demo:
	$(SV72) demo-data --out $(DEMO)/raw
	$(SV72) ingest --name demo-real --folder $(DEMO)/raw/real --source real --generator demo-photo
	$(SV72) ingest --name demo-synth --folder $(DEMO)/raw/synthetic --source synthetic --generator demo-sdxl
	$(SV72) synth-mix --real demo-real --synthetic demo-synth --name demo-mix --preview 4
	@echo "demo done: datasets/demo-real, datasets/demo-synth, datasets/demo-mix"

test:
	SV72_NO_PROGRESS=1 $(CARGO) test --locked

bench:
	$(CARGO) bench --locked

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-demo:
	rm -rf $(DEMO) datasets/demo-real datasets/demo-synth datasets/demo-mix
