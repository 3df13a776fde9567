// ONNX Runtime's C API, from Debian's libonnxruntime-dev, fetched by scripts/setup into .ort/include (never
// committed). Only the header is used at build time: the library itself is loaded with dlopen at run time.
#pragma once
#include "../../.ort/include/onnxruntime/onnxruntime_c_api.h"
