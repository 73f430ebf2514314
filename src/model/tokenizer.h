// The Caduceus / HyenaDNA character vocabulary: specials 0-6, A=7 C=8 G=9 T=10 N=11.
// Lowercase (soft-masked) bases read as uppercase; IUPAC codes and any other letter read as N.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

namespace dnamba {

enum Token : int32_t {
  kTokCls = 0, kTokSep = 1, kTokBos = 2, kTokMask = 3, kTokPad = 4, kTokReserved = 5, kTokUnk = 6,
  kTokA = 7, kTokC = 8, kTokG = 9, kTokT = 10, kTokN = 11
};

inline int32_t base_to_token(char c) {
  switch (c | 0x20) {  // ASCII lowercase
    case 'a': return kTokA;
    case 'c': return kTokC;
    case 'g': return kTokG;
    case 't': return kTokT;
    default: return kTokN;
  }
}

inline char token_to_base(int32_t t) {
  static const char k[] = "ACGTN";
  return (t >= kTokA && t <= kTokN) ? k[t - kTokA] : '?';
}

// A<->T, C<->G; everything else maps to itself.
inline int32_t complement_token(int32_t t) {
  if (t >= kTokA && t <= kTokT) return kTokA + kTokT - t;
  return t;
}

inline void tokenize(std::string_view seq, std::vector<int32_t>& out) {
  out.resize(seq.size());
  for (size_t i = 0; i < seq.size(); ++i) out[i] = base_to_token(seq[i]);
}

}  // namespace dnamba
