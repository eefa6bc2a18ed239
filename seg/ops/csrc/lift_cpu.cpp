// The depthwise part of a learned LiftPool predictor on the CPU, in one pass each way:
//
//   forward:  r = relu(bias + depthwise 1 x k conv of z along one axis), reflect borders
//             (replicate when the axis is too short to reflect), as seg.ops.lifting;
//   backward: from dL/dr, the gradients of z, of the k taps and of the bias.
//
// The eager fused path (seg/ops/lifting_fused.py) runs this as k multiply-adds, a border
// fix-up per border position, a ReLU and, in backward, a threshold, k products and k sums:
// a dozen passes and dozens of ATen calls per predictor. Here each is one loop over the
// data, parallel over channels. z may be a strided view (last axis contiguous); the outputs
// are contiguous. Built on first use by seg/ops/_cpu_ext.py.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

// Where position p (possibly outside [0, length)) reads from.
inline int64_t source(int64_t p, int64_t length, int64_t pad) {
  if (length > pad) {
    if (p < 0) p = -p;
    if (p > length - 1) p = 2 * (length - 1) - p;
  }
  return std::min(std::max(p, int64_t(0)), length - 1);
}

// NaN stays NaN, as torch.relu.
template <typename T>
inline T relu(T v) {
  return v < T(0) ? T(0) : v;
}

// The positions of a row whose taps reach past its ends, [0, lo) and [hi, length), where
// [lo, hi) is the interior (hi >= lo).
template <typename F>
inline void for_border(int64_t lo, int64_t hi, int64_t length, F f) {
  for (int64_t w = 0; w < lo; ++w) f(w);
  for (int64_t w = hi; w < length; ++w) f(w);
}

// The gradient through the ReLU of one row (as threshold_backward: NaN passes), into gh;
// returns its sum (the row's share of the bias gradient).
template <typename T>
inline T relu_grad_row(const T* __restrict__ grad, const T* __restrict__ r, T* __restrict__ gh,
                       int64_t length) {
  T sum = 0;
  for (int64_t w = 0; w < length; ++w) {
    gh[w] = r[w] <= T(0) ? T(0) : grad[w];
    sum += gh[w];
  }
  return sum;
}

// One channel's accumulated tap and bias gradients, in the output's dtype.
template <typename T>
inline void store_channel(const std::vector<double>& taps, double bias, T* g_taps, T* g_bias) {
  for (size_t j = 0; j < taps.size(); ++j) g_taps[j] = T(taps[j]);
  *g_bias = T(bias);
}

struct Shape {
  int64_t n, c, rows, cols;     // [N, C, rows, cols]; the conv runs along rows or cols
  int64_t s_n, s_c, s_row;      // z's strides (cols contiguous)
};

// ---------------------------------------------------------------- along the last axis

template <typename T>
void forward_cols(const T* __restrict__ z, T* __restrict__ r, const T* __restrict__ taps,
                  const T* __restrict__ bias, const Shape& s, int64_t k) {
  const int64_t pad = k / 2, length = s.cols;
  const int64_t lo = std::min(pad, length), hi = std::max(lo, length - pad);
  at::parallel_for(0, s.n * s.c, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / s.c, c = nc % s.c;
      const T* t = taps + c * k;
      for (int64_t row = 0; row < s.rows; ++row) {
        const T* in = z + n * s.s_n + c * s.s_c + row * s.s_row;
        T* out = r + (nc * s.rows + row) * length;
        for (int64_t w = lo; w < hi; ++w) out[w] = bias[c];
        for (int64_t j = 0; j < k; ++j) {
          const T tj = t[j];
          const T* shifted = in + j - pad;
          for (int64_t w = lo; w < hi; ++w) out[w] += tj * shifted[w];
        }
        for (int64_t w = lo; w < hi; ++w) out[w] = relu(out[w]);
        for_border(lo, hi, length, [&](int64_t w) {
          T acc = bias[c];
          for (int64_t j = 0; j < k; ++j) acc += t[j] * in[source(w + j - pad, length, pad)];
          out[w] = relu(acc);
        });
      }
    }
  });
}

template <typename T>
void backward_cols(const T* __restrict__ grad, const T* __restrict__ r, const T* __restrict__ z,
                   const T* __restrict__ taps, T* __restrict__ gz, T* __restrict__ g_taps,
                   T* __restrict__ g_bias, const Shape& s, int64_t k) {
  const int64_t pad = k / 2, length = s.cols;
  const int64_t lo = std::min(pad, length), hi = std::max(lo, length - pad);
  at::parallel_for(0, s.c, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> gh(length);
    std::vector<double> acc_taps(k);
    for (int64_t c = begin; c < end; ++c) {
      const T* t = taps + c * k;
      std::fill(acc_taps.begin(), acc_taps.end(), 0.0);
      double acc_bias = 0.0;
      for (int64_t n = 0; n < s.n; ++n) {
        for (int64_t row = 0; row < s.rows; ++row) {
          const int64_t offset = ((n * s.c + c) * s.rows + row) * length;
          const T* g = grad + offset;
          const T* rr = r + offset;
          const T* in = z + n * s.s_n + c * s.s_c + row * s.s_row;
          T* out = gz + offset;
          acc_bias += relu_grad_row(g, rr, gh.data(), length);
          std::fill(out, out + length, T(0));
          for (int64_t j = 0; j < k; ++j) {
            const T tj = t[j];
            const T* shifted = in + j - pad;
            T* target = out + j - pad;
            T dot = 0;
            for (int64_t w = lo; w < hi; ++w) {
              dot += gh[w] * shifted[w];
              target[w] += tj * gh[w];
            }
            for_border(lo, hi, length, [&](int64_t w) {
              const int64_t src = source(w + j - pad, length, pad);
              dot += gh[w] * in[src];
              out[src] += tj * gh[w];
            });
            acc_taps[j] += dot;
          }
        }
      }
      store_channel(acc_taps, acc_bias, g_taps + c * k, g_bias + c);
    }
  });
}

// ---------------------------------------------------------------- along the rows

template <typename T>
void forward_rows(const T* __restrict__ z, T* __restrict__ r, const T* __restrict__ taps,
                  const T* __restrict__ bias, const Shape& s, int64_t k) {
  const int64_t pad = k / 2, length = s.rows, width = s.cols;
  at::parallel_for(0, s.n * s.c, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / s.c, c = nc % s.c;
      const T* t = taps + c * k;
      const T* plane = z + n * s.s_n + c * s.s_c;
      for (int64_t i = 0; i < length; ++i) {
        T* out = r + (nc * length + i) * width;
        for (int64_t w = 0; w < width; ++w) out[w] = bias[c];
        for (int64_t j = 0; j < k; ++j) {
          const T tj = t[j];
          const T* in = plane + source(i + j - pad, length, pad) * s.s_row;
          for (int64_t w = 0; w < width; ++w) out[w] += tj * in[w];
        }
        for (int64_t w = 0; w < width; ++w) out[w] = relu(out[w]);
      }
    }
  });
}

template <typename T>
void backward_rows(const T* __restrict__ grad, const T* __restrict__ r, const T* __restrict__ z,
                   const T* __restrict__ taps, T* __restrict__ gz, T* __restrict__ g_taps,
                   T* __restrict__ g_bias, const Shape& s, int64_t k) {
  const int64_t pad = k / 2, length = s.rows, width = s.cols;
  at::parallel_for(0, s.c, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> gh(width);
    std::vector<double> acc_taps(k);
    for (int64_t c = begin; c < end; ++c) {
      const T* t = taps + c * k;
      std::fill(acc_taps.begin(), acc_taps.end(), 0.0);
      double acc_bias = 0.0;
      for (int64_t n = 0; n < s.n; ++n) {
        const int64_t base = (n * s.c + c) * length * width;
        const T* plane = z + n * s.s_n + c * s.s_c;
        std::fill(gz + base, gz + base + length * width, T(0));
        for (int64_t i = 0; i < length; ++i) {
          const T* g = grad + base + i * width;
          const T* rr = r + base + i * width;
          acc_bias += relu_grad_row(g, rr, gh.data(), width);
          for (int64_t j = 0; j < k; ++j) {
            const T tj = t[j];
            const int64_t src = source(i + j - pad, length, pad);
            const T* in = plane + src * s.s_row;
            T* out = gz + base + src * width;
            T dot = 0;
            for (int64_t w = 0; w < width; ++w) {
              dot += gh[w] * in[w];
              out[w] += tj * gh[w];
            }
            acc_taps[j] += dot;
          }
        }
      }
      store_channel(acc_taps, acc_bias, g_taps + c * k, g_bias + c);
    }
  });
}

// ---------------------------------------------------------------- bindings

torch::Tensor lastdim_contiguous(const torch::Tensor& t) {
  return t.stride(3) == 1 ? t : t.contiguous();
}

Shape shape_of(const torch::Tensor& z) {
  return {z.size(0), z.size(1), z.size(2), z.size(3), z.stride(0), z.stride(1), z.stride(2)};
}

void check(const torch::Tensor& z, const torch::Tensor& taps, int64_t dim) {
  TORCH_CHECK(z.device().is_cpu() && z.dim() == 4, "dw_relu: z must be a 4d CPU tensor");
  TORCH_CHECK(dim == 2 || dim == 3, "dw_relu: dim must be 2 or 3");
  TORCH_CHECK(taps.dim() == 2 && taps.size(0) == z.size(1) && taps.is_contiguous() &&
                  taps.scalar_type() == z.scalar_type(),
              "dw_relu: taps must be a contiguous [C, k] tensor of z's dtype");
}

torch::Tensor dw_relu(torch::Tensor z, torch::Tensor taps, torch::Tensor bias, int64_t dim) {
  check(z, taps, dim);
  TORCH_CHECK(bias.numel() == z.size(1) && bias.is_contiguous() &&
                  bias.scalar_type() == z.scalar_type(),
              "dw_relu: bias must be a contiguous [C] tensor of z's dtype");
  z = lastdim_contiguous(z);
  auto r = torch::empty(z.sizes(), z.options());
  const Shape s = shape_of(z);
  if (z.numel() == 0) return r;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "dw_relu", [&] {
    auto fn = dim == 3 ? forward_cols<scalar_t> : forward_rows<scalar_t>;
    fn(z.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), taps.data_ptr<scalar_t>(),
       bias.data_ptr<scalar_t>(), s, taps.size(1));
  });
  return r;
}

std::vector<torch::Tensor> dw_relu_backward(torch::Tensor grad, torch::Tensor r, torch::Tensor z,
                                            torch::Tensor taps, int64_t dim) {
  check(z, taps, dim);
  z = lastdim_contiguous(z);
  grad = grad.contiguous();
  TORCH_CHECK(r.is_contiguous() && r.sizes() == z.sizes() && grad.sizes() == z.sizes(),
              "dw_relu_backward: grad and r must be shaped as z (r contiguous)");
  auto gz = torch::empty(z.sizes(), z.options());
  auto g_taps = torch::zeros_like(taps);
  auto g_bias = torch::zeros({z.size(1)}, z.options());
  const Shape s = shape_of(z);
  if (z.numel() == 0) return {gz, g_taps, g_bias};
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "dw_relu_backward", [&] {
    auto fn = dim == 3 ? backward_cols<scalar_t> : backward_rows<scalar_t>;
    fn(grad.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(),
       taps.data_ptr<scalar_t>(), gz.data_ptr<scalar_t>(), g_taps.data_ptr<scalar_t>(),
       g_bias.data_ptr<scalar_t>(), s, taps.size(1));
  });
  return {gz, g_taps, g_bias};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("dw_relu", &dw_relu, "relu(bias + depthwise 1 x k conv along dim), reflect borders");
  m.def("dw_relu_backward", &dw_relu_backward, "gradients of z, taps [C, k] and bias [C]");
}
