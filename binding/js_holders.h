// js_holders.h — native state shared by the JS wrappers, workers and caches.
// A ModelHolder outlives every call in flight (workers hold a shared_ptr) and every
// cache made from it (cache tensors belong to its backend).
//
// The main thread never waits for the model mutex: dispose and cache release use
// try_lock, and what they cannot do at once is left to the call holding the lock
// (ModelLock drains it on unlock) or to the holder's destructor.
#pragma once
#include <napi.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/model.h"

namespace esolm {

struct ModelHolder {
  std::mutex mu;  // one call at a time per model
  std::atomic<bool> disposed{false};
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;  // destroyed before backend

  // Caches released while a call held `mu`; freed by whoever holds it next.
  std::mutex pending_mu;
  std::vector<std::unique_ptr<KVCache>> pending;

  bool live() const { return model && !disposed.load(); }

  // Caller holds `mu` (or is the last owner): frees released caches, and the model once disposed.
  void drain() {
    std::vector<std::unique_ptr<KVCache>> todo;
    {
      std::lock_guard<std::mutex> lk(pending_mu);
      todo.swap(pending);
    }
    for (auto& c : todo) release_tensors(*c);
    if (disposed.load()) model.reset();
  }

  // Never blocks on `mu`.
  void release_cache(std::unique_ptr<KVCache> c) {
    if (!c) return;
    if (mu.try_lock()) {
      release_tensors(*c);
      mu.unlock();
    } else {
      std::lock_guard<std::mutex> lk(pending_mu);
      pending.push_back(std::move(c));
    }
  }

  // Never blocks on `mu`: frees the weights now if idle, else when the call in flight ends.
  void dispose() {
    disposed.store(true);
    if (mu.try_lock()) {
      drain();
      mu.unlock();
    }
  }

  ~ModelHolder() {
    drain();
    model.reset();
    backend.reset();
  }

 private:
  void release_tensors(KVCache& c) {
    if (!backend) return;
    for (auto& t : c.k) backend->release(t);
    for (auto& t : c.v) backend->release(t);
    backend->release(c.clean);
  }
};

// Holds a model's mutex for one call; on unlock frees what dispose/release left behind.
class ModelLock {
 public:
  explicit ModelLock(ModelHolder& h) : h_(h) { h_.mu.lock(); }
  ~ModelLock() {
    h_.drain();
    h_.mu.unlock();
  }
  ModelLock(const ModelLock&) = delete;
  ModelLock& operator=(const ModelLock&) = delete;

 private:
  ModelHolder& h_;
};

struct CacheHolder {
  std::shared_ptr<ModelHolder> owner;
  int batch = 0, capacity = 0;
  // Allocated at creation when the model is idle, else by the first call that uses it.
  std::unique_ptr<KVCache> cache;
  std::atomic<bool> disposed{false};  // set by dispose(); calls queued after it reject

  // Caller holds owner->mu.
  Status ensure(Model& m) {
    if (cache) return Status::ok();
    return m.create_cache(batch, capacity, cache);
  }
  ~CacheHolder() {
    if (owner) owner->release_cache(std::move(cache));
  }
};

// The JS classes (js_model.cpp, js_cache.cpp) and load (js_load.cpp), per environment.
Napi::Function init_model_class(Napi::Env env);
Napi::Function init_cache_class(Napi::Env env);
void register_load_functions(Napi::Env env, Napi::Object exports);
Napi::Value wrap_model(Napi::Env env, std::shared_ptr<ModelHolder> h);
Napi::Value wrap_cache(Napi::Env env, std::shared_ptr<CacheHolder> c);
// The holder of a live NativeCache made by model `h`; a typed error otherwise.
std::shared_ptr<CacheHolder> unwrap_cache(Napi::Env env, Napi::Value v, const std::shared_ptr<ModelHolder>& h);

// js_generate.cpp: starts one generation; returns { promise, cancel }.
Napi::Value start_generate(Napi::Env env, std::shared_ptr<ModelHolder> h, std::shared_ptr<CacheHolder> ch,
                           Napi::Object req, Napi::Value on_event);

}  // namespace esolm
