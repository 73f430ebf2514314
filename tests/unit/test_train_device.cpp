// Choosing the training backend: clear errors for devices this build or machine cannot train on.
#include <gtest/gtest.h>

#include <functional>

#include "backend/backend.h"
#include "train/train_backend.h"
#include "test_util.h"

using namespace dnamba;
using dnamba::test::error_of;
using namespace dnamba::train;

TEST(TrainDevice, CpuTrainsInFp32Only) {
  EXPECT_EQ(make_train_backend("cpu", 1)->name(), "cpu");
  EXPECT_NE(error_of([] { make_train_backend("cpu", 1, DType::BF16); }).find("not supported"), std::string::npos);
}

TEST(TrainDevice, UnknownDeviceIsAnError) {
  EXPECT_NE(error_of([] { make_train_backend("tpu", 1); }).find("unknown --device"), std::string::npos);
}

TEST(TrainDevice, CudaWithoutAGpuIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA GPU is present (tests/gpu covers it)";
  const std::string e = error_of([] { make_train_backend("cuda", 1); });
  // Without CUDA support in the build, or without a GPU on the machine: either way it says so.
  EXPECT_TRUE(e.find("without CUDA support") != std::string::npos || e.find("no CUDA GPU") != std::string::npos) << e;
  EXPECT_EQ(default_train_device(), "cpu");
}
