// js_holders.h — native state shared by the JS wrappers, workers and caches.
// A ModelHolder outlives every call in flight (workers hold a shared_ptr) and every
// cache made from it (cache tensors belong to its backend).
#pragma once
#include <napi.h>

#include <memory>
#include <mutex>

#include "engine/model.h"

namespace esolm {

struct ModelHolder {
  std::mutex mu;  // one call at a time per model
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;  // destroyed before backend
  ~ModelHolder() {
    model.reset();
    backend.reset();
  }
};

struct CacheHolder {
  std::shared_ptr<ModelHolder> owner;
  std::unique_ptr<KVCache> cache;
  ~CacheHolder() {
    // Cache tensors belong to the backend, which lives as long as any holder.
    if (cache && owner && owner->backend) {
      std::lock_guard<std::mutex> lk(owner->mu);
      for (auto& t : cache->k) owner->backend->release(t);
      for (auto& t : cache->v) owner->backend->release(t);
      owner->backend->release(cache->clean);
    }
  }
};

// js_generate.cpp: starts one generation; returns { promise, cancel }.
Napi::Value start_generate(Napi::Env env, std::shared_ptr<ModelHolder> h, std::shared_ptr<CacheHolder> ch,
                           Napi::Object req, Napi::Value on_event);

}  // namespace esolm
