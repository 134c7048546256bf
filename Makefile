# sv72 — common tasks. `make demo` runs the pipeline on the embedded demo set; `make test` runs the tests.
CARGO   ?= cargo
PROFILE ?= release
# cargo puts the `dev` profile in target/debug
PROFILE_DIR := $(if $(filter dev,$(PROFILE)),debug,$(PROFILE))
BIN     := $(or $(CARGO_TARGET_DIR),target)/$(PROFILE_DIR)/sv72
DEMO    ?= datasets/demo
DEMO_PORT ?= 18091
# Fixed key of the demo axon (it also signs the demo model card's submitted_by).
DEMO_AXON_SEED := 0101010101010101010101010101010101010101010101010101010101010101
# The demo backbone: a tiny DINOv2-with-registers ViT (48 wide, 3 blocks) pretrained by
# tools/pretrain_demo_backbone.py on scenes of another seed (a random one does not learn; README).
DEMO_BACKBONE ?= assets/demo-backbone
# Scenes per source (real, synthetic): 1,496 training images and a 183-image test split (README,
# "The demo learns": at 480 the fine-tune's gain over the frozen head stayed inside its interval).
DEMO_COUNT ?= 960
# The demo's A/B tests draw 3 challenges per image and validator level (2,196 paired answers on
# the test split) for a tighter comparison; the bootstrap still resamples whole images.
DEMO_AB ?= --set ab_test.draws_per_image=3
# Demo exports, A/B reports and cycle state stay under $(DEMO) so `make clean-demo` never touches
# a miner's own exports/.
DEMO_EXPORTS := $(DEMO)/exports
# The demo fine-tune: the whole pretrained demo backbone with a linear head (README, "The demo
# learns": lr 2e-3 beat 5e-4 and 3e-3 there).
DEMO_FINETUNE ?= --mode full --set finetune.lr=0.002 --set finetune.head_lr=0.005 --set finetune.batch_size=32 \
	--set finetune.epochs=8
SV72    := $(BIN) --set backbone.model=$(DEMO_BACKBONE) --set paths.exports=$(DEMO_EXPORTS) \
	--set cycle.model_card=$(DEMO_EXPORTS)/deployed/model_card.json --set ab_test.out_dir=$(DEMO)/abtests \
	--set serve.prediction_log=$(DEMO)/predictions.jsonl

.PHONY: all build demo demo-serve test serve-check bench lint fmt clean-demo compat gpu-bundle

all: build

build:
	$(CARGO) build --profile $(PROFILE) --locked --bin sv72

# The main job on the embedded default: generate the demo scenes, ingest them, build the mix,
# train and calibrate a head, evaluate it as validators score, export it in the subnet's Hugging
# Face format and deploy it, train a challenger and A/B test it against the deployed model, serve
# the deployed export and query it once as a validator would, check the retraining schedule, and
# mine hard cases from the eval.
demo: build
	$(SV72) demo-data --out $(DEMO)/raw --count $(DEMO_COUNT)
	$(SV72) ingest --name demo-real --folder $(DEMO)/raw/real --source real --generator demo-photo
	$(SV72) ingest --name demo-synth --folder $(DEMO)/raw/synthetic --source synthetic --generator demo-sdxl
	$(SV72) synth-mix --real demo-real --synthetic demo-synth --name demo-mix --preview 4
	$(SV72) train-head --manifest demo-mix
	$(SV72) eval --on demo-mix:test
	cp checkpoints/latest $(DEMO)/deployed.run
	$(BIN) query --print-hotkey --hotkey-seed $(DEMO_AXON_SEED) > $(DEMO)/axon.hotkey
	$(SV72) export checkpoints/latest --target transformers --hotkey "$$(cat $(DEMO)/axon.hotkey)"
	$(SV72) deploy
	$(SV72) train-head --manifest demo-mix --set head.kind=mlp
	$(SV72) ab-test $(DEMO_EXPORTS)/deployed checkpoints/latest --on demo-mix:test $(DEMO_AB); rc=$$?; \
	  [ $$rc -eq 0 ] || [ $$rc -eq 3 ] || exit $$rc; echo "ab-test exit $$rc (0 = promote, 3 = keep)"
	$(SV72) finetune --manifest demo-mix $(DEMO_FINETUNE)
	$(SV72) eval --on demo-mix:test
	$(SV72) ab-test $(DEMO_EXPORTS)/deployed checkpoints/latest --on demo-mix:test $(DEMO_AB); rc=$$?; \
	  [ $$rc -eq 0 ] || [ $$rc -eq 3 ] || exit $$rc; echo "finetune ab-test exit $$rc (0 = promote, 3 = keep)"
	$(MAKE) --no-print-directory demo-serve
	$(SV72) retrain-check --calendar $(DEMO)/cycle.ics
	$(SV72) mine-hard --eval checkpoints/$$(cat $(DEMO)/deployed.run) --max-cases 16 --out $(DEMO)/hard
	@echo "demo done: datasets/demo-{real,synth,mix}, checkpoints/latest (report.md, plots), $(DEMO_EXPORTS)/deployed, $(DEMO)/abtests, $(DEMO)/hard, $(DEMO)/serve.log"

# Serve the deployed export on 127.0.0.1, send one signed query as a validator would, stop cleanly.
demo-serve:
	$(BIN) query --print-hotkey > $(DEMO)/validator.hotkey
	$(BIN) query --print-hotkey --hotkey-seed $(DEMO_AXON_SEED) > $(DEMO)/axon.hotkey
	printf '[{"hotkey":"%s","uid":1,"stake":50000.0,"validator_permit":true}]\n' "$$(cat $(DEMO)/validator.hotkey)" > $(DEMO)/metagraph.json
	$(SV72) serve --checkpoint $(DEMO_EXPORTS)/deployed --hotkey "$$(cat $(DEMO)/axon.hotkey)" --metagraph $(DEMO)/metagraph.json --port $(DEMO_PORT) --set serve.host=127.0.0.1 2> $(DEMO)/serve.log & pid=$$!; \
	rc=0; $(BIN) query --axon 127.0.0.1:$(DEMO_PORT) --axon-hotkey "$$(cat $(DEMO)/axon.hotkey)" --image $(DEMO)/raw/real/roadwork/roadwork_0000.jpg --wait 120 || rc=$$?; \
	kill -TERM $$pid; wait $$pid; exit $$rc

test:
	SV72_NO_PROGRESS=1 $(CARGO) test --locked

# The load and abuse suite of `sv72 serve` (tests/serve_load.rs; a few minutes, loopback only).
# SV72_ANCHOR_PYTHON=<python with tools/requirements-anchor.txt> adds the official-axon anchor.
serve-check:
	SV72_NO_PROGRESS=1 $(CARGO) test --profile $(PROFILE) --locked --test main serve_load:: -- --ignored --nocapture --test-threads=1

bench:
	$(CARGO) bench --locked

# The GPU check's bundle (issue #11): the CUDA `sv72` and backbone test binaries, stripped, the
# backbone fixtures and tools/gpu_check.sh, in dist/gpu-check/ — everything the check needs on a
# GPU machine without network or registry. Run there: `dist/gpu-check/gpu_check.sh OUT_DIR`.
GPU_BUNDLE ?= dist/gpu-check
gpu-bundle:
	$(CARGO) build --release --locked --features cuda --bin sv72
	rm -rf $(GPU_BUNDLE) && mkdir -p $(GPU_BUNDLE)/fixtures
	cp $(or $(CARGO_TARGET_DIR),target)/release/sv72 $(GPU_BUNDLE)/sv72
	cp "$$($(CARGO) test --release --locked --features cuda --test main --no-run --message-format=json \
	  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)" $(GPU_BUNDLE)/backbone-tests
	strip $(GPU_BUNDLE)/sv72 $(GPU_BUNDLE)/backbone-tests
	cp -r tests/fixtures/backbones tests/fixtures/images $(GPU_BUNDLE)/fixtures/
	cp tools/gpu_check.sh $(GPU_BUNDLE)/
	@du -sh $(GPU_BUNDLE)

# Developer tool (downloads torch twice): exports every fixture family x head, loads each as the
# subnet's miner does in its pinned stack (transformers 4.45.2) and in current transformers,
# compares with sv72, prints the table README shows. Not part of CI (CI checks the configs).
compat:
	python3 tools/export_compat.py $(COMPAT_ARGS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-demo:
	rm -rf $(DEMO) datasets/demo-real datasets/demo-synth datasets/demo-mix datasets/store datasets/.features
