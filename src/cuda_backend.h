/* The CUDA backend (src/cuda/): bf16 weights and activations on one GPU,
 * fp32 accumulation, fp32 master LoRA params and gradients on the device,
 * one stream, no host synchronisation inside a training step (backend.h).
 * Built only with `make CUDA=1` (MODPO_CUDA). */
#ifndef MODPO_CUDA_BACKEND_H
#define MODPO_CUDA_BACKEND_H

#include <stdint.h>

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Uploads `model` (borrowed; it must outlive the backend) to GPU `device` as
 * bf16 and returns a Backend whose ops are the CUDA implementation. */
int cuda_backend_create(const LlamaModel *model, int device, Backend **out, Error *err);

/* A backend whose untied weights are random (std 0.02, norms 1), made on
 * the device: for benchmarks of model shapes without files.  No host model. */
int cuda_backend_create_random(const LlamaConfig *config, int device, uint64_t seed,
                               Backend **out, Error *err);

/* With `on`, training passes (logps with keep) keep only each layer's fp32
 * input and the backward recomputes the layer's activations from it: about
 * 16 KB a token a layer kept instead of ~116 KB (7B shape), for one more
 * forward without down_proj.  Takes effect at the next logps. */
void cuda_backend_set_recompute(Backend *b, int on);

/* With `on` (the default; MODPO_CUDA_GRAPHS=0 turns it off at creation),
 * a decode step whose batch and buffers are those of the step before is
 * replayed from a CUDA graph captured at the second such step, not issued
 * launch by launch: the same kernels, so the same logits, bit for bit. */
void cuda_backend_set_graphs(Backend *b, int on);
/* Decode steps run from a captured graph since the backend was made. */
long cuda_backend_graph_launches(Backend *b);
/* With `on` (the default; MODPO_CUDA_GEMV_GLU=0 turns it off at creation),
 * a decode step's MLP without LoRA is two GEMVs, SwiGLU in the first's
 * epilogue; off, gate/up's GEMV writes gate and up and every block of
 * down_proj's forms SwiGLU of them in its prologue.  Same bits either way.  cuda_backend_glu_gemvs: how many such
 * GEMVs were issued (a captured graph's replays count once). */
void cuda_backend_set_gemv_glu(Backend *b, int on);
long cuda_backend_glu_gemvs(Backend *b);

/* With MODPO_CUDA_PROFILE=1: GPU milliseconds per phase since the last
 * call (resolved at syncs), names[i] for ms[i]; returns how many (0 when
 * not profiling).  Resets the totals. */
int cuda_backend_profile(Backend *b, double *ms, const char **names, int cap);

/* Benchmarks: the GEMVs of one batch-1 decode step alone (every layer's
 * Linears, base weights only, then the LM head), `reps` times back to back;
 * GPU milliseconds per pass and the weight bytes a pass reads. */
int cuda_backend_gemv_bench(Backend *b, int reps, double *ms_per_pass, double *bytes_per_pass,
                            Error *err);

/* The GPU this process should use: its node-local rank (OMPI_COMM_WORLD_LOCAL_RANK,
 * SLURM_LOCALID or LOCAL_RANK) modulo the visible GPUs; 0 without one. */
int cuda_backend_default_device(void);

#ifdef __cplusplus
}
#endif

#endif
