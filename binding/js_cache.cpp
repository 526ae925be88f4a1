// js_cache.cpp — NativeCache: a JS handle on a CacheHolder. Nothing here waits for the
// model mutex: release goes through ModelHolder::release_cache (see js_holders.h).
#include <napi.h>

#include <memory>

#include "js_common.h"
#include "js_holders.h"

namespace esolm {
namespace {

class NativeCache : public Napi::ObjectWrap<NativeCache> {
 public:
  NativeCache(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeCache>(info) {}
  std::shared_ptr<CacheHolder> holder;

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (holder) holder->disposed.store(true);
    holder.reset();  // a call in flight keeps its own reference; the last one releases
    return info.Env().Undefined();
  }
  Napi::Value Committed(const Napi::CallbackInfo& info) {
    if (!holder || !holder->cache) return Napi::Number::New(info.Env(), 0);
    return Napi::Number::New(info.Env(), holder->cache->committed);
  }
  // Called by TS through the model's call queue, so no call is using the cache.
  Napi::Value Reset(const Napi::CallbackInfo& info) {
    if (holder && holder->cache) holder->cache->committed = 0;
    return info.Env().Undefined();
  }
};

}  // namespace

Napi::Function init_cache_class(Napi::Env env) {
  Napi::Function f = NativeCache::DefineClass(env, "NativeCache",
                                              {NativeCache::InstanceMethod("dispose", &NativeCache::Dispose),
                                               NativeCache::InstanceAccessor("committed", &NativeCache::Committed, nullptr),
                                               NativeCache::InstanceMethod("reset", &NativeCache::Reset)});
  addon_data(env).cache_ctor = Napi::Persistent(f);
  return f;
}

Napi::Value wrap_cache(Napi::Env env, std::shared_ptr<CacheHolder> c) {
  Napi::Object obj = addon_data(env).cache_ctor.New({});
  NativeCache::Unwrap(obj)->holder = std::move(c);
  return obj;
}

std::shared_ptr<CacheHolder> unwrap_cache(Napi::Env env, Napi::Value v, const std::shared_ptr<ModelHolder>& h) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(addon_data(env).cache_ctor.Value()))
    throw_invalid(env, "expected a Cache");
  NativeCache* c = NativeCache::Unwrap(v.As<Napi::Object>());
  if (!c->holder || c->holder->disposed.load())
    throw make_error(env, Status::error(Code::disposed, "the cache has been disposed"));
  if (c->holder->owner != h) throw_invalid(env, "the cache belongs to another model");
  return c->holder;
}

}  // namespace esolm
