#include "backend/cuda/lt_gemm.h"

#include <sstream>

#include "backend/cuda/cuda_check.h"

namespace dnamba::cuda {

// Column-major view of the row-major product: out^T[N,T] = op_T(W as [K,N]) . x^T as [K,T].
struct LtGemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  bool have_algo = false;
  GemmAlgo best;
  ~Plan() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

std::string GemmAlgo::describe() const {
  auto get = [&](cublasLtMatmulAlgoConfigAttributes_t attr, auto zero) {
    decltype(zero) v = zero;
    size_t written = 0;
    cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, &v, sizeof(v), &written);
    return static_cast<long long>(v);
  };
  std::ostringstream o;
  o << "id " << get(CUBLASLT_ALGO_CONFIG_ID, int32_t(0)) << " tile " << get(CUBLASLT_ALGO_CONFIG_TILE_ID, uint32_t(0))
    << " stages " << get(CUBLASLT_ALGO_CONFIG_STAGES_ID, uint32_t(0)) << " splitk "
    << get(CUBLASLT_ALGO_CONFIG_SPLITK_NUM, int32_t(0)) << " red "
    << get(CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, uint32_t(0)) << " swz "
    << get(CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, uint32_t(0)) << " cust "
    << get(CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, uint32_t(0)) << " inner "
    << get(CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID, uint16_t(0)) << " cluster "
    << get(CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, uint16_t(0)) << " ws " << workspace;
  return o.str();
}

LtGemm::LtGemm(size_t workspace_bytes) : ws_bytes_(workspace_bytes) {
  CUBLAS_CHECK(cublasLtCreate(&lt_));
  if (ws_bytes_) CUDA_CHECK(cudaMalloc(&ws_, ws_bytes_));
}

LtGemm::~LtGemm() {
  plans_.clear();
  if (ws_) cudaFree(ws_);
  if (lt_) cublasLtDestroy(lt_);
}

LtGemm::Plan& LtGemm::plan(const GemmShape& s) {
  auto it = plans_.find(s);
  if (it != plans_.end()) return *it->second;
  if (plans_.size() >= 64) plans_.clear();  // shapes vary only with the last chunk's length
  auto p = std::make_unique<Plan>();
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opT, sizeof(opT)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof(opN)));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, s.xw_type, uint64_t(s.K), uint64_t(s.N), s.ldw));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, s.xw_type, uint64_t(s.K), uint64_t(s.T), s.ldx));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, s.out_type, uint64_t(s.N), uint64_t(s.T), s.ldo));
  Plan& ref = *p;
  plans_.emplace(s, std::move(p));
  return ref;
}

std::vector<GemmAlgo> LtGemm::candidates(const GemmShape& s, int max) {
  Plan& p = plan(s);
  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes_,
                                                    sizeof(ws_bytes_)));
  std::vector<cublasLtMatmulHeuristicResult_t> res(size_t(max > 0 ? max : 1));
  int got = 0;
  cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(lt_, p.desc, p.a, p.b, p.c, p.c, pref, int(res.size()), res.data(), &got);
  cublasLtMatmulPreferenceDestroy(pref);
  std::vector<GemmAlgo> out;
  if (st != CUBLAS_STATUS_SUCCESS) return out;
  for (int i = 0; i < got; ++i)
    if (res[size_t(i)].state == CUBLAS_STATUS_SUCCESS) out.push_back({res[size_t(i)].algo, res[size_t(i)].workspaceSize});
  return out;
}

void LtGemm::run(const GemmShape& s, const void* x, const void* W, void* out, float beta, cudaStream_t stream,
                 const GemmAlgo* algo) {
  Plan& p = plan(s);
  if (!algo) {
    if (!p.have_algo) {
      auto c = candidates(s, 1);
      if (c.empty())
        throw Error("cuBLASLt has no algorithm for a " + std::to_string(s.T) + "x" + std::to_string(s.N) + "x" +
                    std::to_string(s.K) + " product");
      p.best = c[0];
      p.have_algo = true;
    }
    algo = &p.best;
  }
  const float alpha = 1.0f;
  CUBLAS_CHECK(cublasLtMatmul(lt_, p.desc, &alpha, W, p.a, x, p.b, &beta, out, p.c, out, p.c, &algo->algo, ws_,
                              ws_bytes_, stream));
}

}  // namespace dnamba::cuda
