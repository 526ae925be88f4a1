// js_worker.h — the one base for the addon's promise-returning async calls. Run() goes
// off the event loop; every C++ exception it throws becomes a typed rejection
// (bad_alloc -> ERR_OUT_OF_MEMORY, anything else -> ERR_INTERNAL), and Result() builds
// the resolved value on the main thread (a Napi::Error it throws rejects the promise).
#pragma once
#include <napi.h>

#include <exception>
#include <new>
#include <utility>

#include "engine/status.h"
#include "js_common.h"

namespace esolm {

// Runs f() and turns any exception into a Status.
template <class F>
Status guarded(F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return Status::error(Code::out_of_memory, "out of host memory");
  } catch (const std::exception& e) {
    return Status::error(Code::internal, e.what());
  } catch (...) {
    return Status::error(Code::internal, "unknown native exception");
  }
}

class Worker : public Napi::AsyncWorker {
 public:
  explicit Worker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  virtual Status Run() = 0;                         // worker thread
  virtual Napi::Value Result(Napi::Env env) = 0;    // main thread, after Run() succeeded

 private:
  void Execute() final { status_ = guarded([this] { return Run(); }); }
  void OnOK() final {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (!status_) {
      deferred_.Reject(make_error(env, status_).Value());
      return;
    }
    try {
      deferred_.Resolve(Result(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) final { deferred_.Reject(e.Value()); }

  Napi::Promise::Deferred deferred_;
  Status status_;
};

}  // namespace esolm
