# modpo build.  `make` builds the CPU binary, `make CUDA=1` adds the CUDA
# backend (sm_90), `make test` builds and runs every Check suite in tests/.

CC       ?= mpicc
ifeq ($(origin CC),default)
CC       := mpicc
endif
NVCC     ?= /usr/local/cuda/bin/nvcc
CUDA_HOME?= /usr/local/cuda
ifeq ($(CUDA),1)
BUILD    ?= build-cuda
else
BUILD    ?= build
endif
BIN      ?= modpo

PKGS     := libconfig jansson zlib openblas hdf5-openmpi
CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra -fopenmp -Isrc -I$(BUILD) \
            $(shell pkg-config --cflags $(PKGS))
LDLIBS   += $(shell pkg-config --libs $(PKGS)) -lm
LDFLAGS  += -fopenmp
CHECK_LIBS := $(shell pkg-config --libs check)

SRCS     := $(wildcard src/*.c src/dist/*.c)
OBJS     := $(patsubst %.c,$(BUILD)/%.o,$(SRCS)) $(BUILD)/embedded_config.o
LIB_OBJS := $(filter-out $(BUILD)/src/main.o,$(OBJS))

ifeq ($(CUDA),1)
CU_SRCS  := $(wildcard src/cuda/*.cu)
CU_OBJS  := $(patsubst %.cu,$(BUILD)/%.o,$(CU_SRCS))
LIB_OBJS += $(CU_OBJS)
CFLAGS   += -DMODPO_CUDA -I$(CUDA_HOME)/include
NVFLAGS  ?= -O2 -g -lineinfo
NVFLAGS  += -std=c++17 -gencode arch=compute_90,code=sm_90 -Isrc \
            -Xcompiler -Wall,-Wextra $(shell pkg-config --cflags-only-I $(PKGS))
LDLIBS   += -L$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lnccl -lcudart -lstdc++
endif

TEST_SRCS := $(wildcard tests/check_*.c)
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRCS))

.PHONY: all test clean deps bench
all: $(BIN)

$(BIN): $(BUILD)/libmodpo.a $(BUILD)/src/main.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(BUILD)/src/main.o $(BUILD)/libmodpo.a $(LDLIBS)

$(BUILD)/libmodpo.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -MMD -MP -c $< -o $@

# conf/tiny.cfg is compiled into the binary: it is the default configuration.
$(BUILD)/embedded_config.c: conf/tiny.cfg tools/embed.sh
	@mkdir -p $(BUILD)
	sh tools/embed.sh embedded_tiny_cfg $< > $@

$(BUILD)/embedded_config.o: $(BUILD)/embedded_config.c
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/tests/%: tests/%.c $(BUILD)/libmodpo.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libmodpo.a $(CHECK_LIBS) $(LDLIBS)

test: $(BIN) $(TEST_BINS)
	@sh tools/run_tests.sh $(TEST_BINS)

# CUDA-only: tests/cuda/ compares the CUDA backend with the CPU one on a GPU
# machine.  `make CUDA=1 cuda-test-bins` builds them (no GPU needed);
# `make CUDA=1 test-cuda` builds and runs them (see docs/cuda.md).
ifeq ($(CUDA),1)
CUDA_TEST_BINS := $(patsubst tests/cuda/%.c,$(BUILD)/tests/cuda/%,$(wildcard tests/cuda/check_*.c))

$(BUILD)/tests/cuda/%: tests/cuda/%.c $(BUILD)/libmodpo.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libmodpo.a $(LDLIBS)

.PHONY: cuda-test-bins test-cuda
cuda-test-bins: $(BIN) $(CUDA_TEST_BINS)

# check_cuda_torch needs a reference folder (tests/cuda/run_torch_check.sh makes it).
test-cuda: cuda-test-bins
	$(BUILD)/tests/cuda/check_cuda_backend
endif

# Benchmarks (bench/README.md): `make bench` builds them; bench/run_cpu_bench.sh runs them.
bench: $(BUILD)/bench/cpu_step
ifeq ($(CUDA),1)
bench: $(BUILD)/bench/cuda_bench
endif

$(BUILD)/bench/%: bench/%.c $(BUILD)/libmodpo.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libmodpo.a $(LDLIBS)

# Developer tool, not part of `all`, `test` or `bench`: a CUPTI kernel/memcpy
# timeline injected into any CUDA program through CUDA_INJECTION64_PATH
# (tools/kernel_trace/README.md).  Builds without a GPU, with or without CUDA=1.
# CUPTI sits in lib64 in this toolkit's layout, under extras/CUPTI in others.
KT_CC     ?= gcc
KT_LIB    := build-cuda/libkernel_trace.so
CUPTI_DIRS?= $(CUDA_HOME)/lib64 /usr/local/cuda-13.0/lib $(CUDA_HOME)/extras/CUPTI/lib64
comma     := ,

.PHONY: kernel-trace
kernel-trace: $(KT_LIB)

$(KT_LIB): tools/kernel_trace/kernel_trace.c
	@mkdir -p $(dir $@)
	$(KT_CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -shared -fPIC \
	    -I$(CUDA_HOME)/include -I$(CUDA_HOME)/extras/CUPTI/include -o $@ $< \
	    $(addprefix -L,$(CUPTI_DIRS)) $(addprefix -Wl$(comma)-rpath$(comma),$(CUPTI_DIRS)) \
	    -lcupti -pthread

deps:
	sh tools/install_deps.sh

clean:
	rm -rf build build-cuda modpo

-include $(OBJS:.o=.d) $(CU_OBJS:.o=.d)
