# The same commands as `bash scripts/dev demo` and `bash scripts/dev test`, which need no make.
# Extra arguments: make test ARGS="-k squid -x"
.PHONY: demo test setup
demo:
	bash scripts/dev demo $(ARGS)
test:
	bash scripts/dev test $(ARGS)
setup:
	bash scripts/dev setup
