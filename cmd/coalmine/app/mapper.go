package app

import (
	"fmt"
	"net/http"
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// mappingCache answers RESTMapping of a kind at one version from memory once the
// manager's mapper has found it. controller-runtime's metadata client asks its mapper on
// every call, and that mapper asks each API group's mapper in turn, building a no-match
// error for every group that lacks the kind: ~9 KiB of garbage per Canary status write
// (the loop's most frequent call) in a cluster with Kuma, Flux and Flagger installed
// (make bench's allocation profile). Only mappings found are kept: a kind not (yet)
// served is asked again each time, so a CRD installed later is found as before. The
// mapper underneath keeps the mappings it found the same way (it reloads a group only on
// a miss), so this changes no answer.
type mappingCache struct {
	meta.RESTMapper
	mu    sync.RWMutex
	found map[schema.GroupVersionKind]*meta.RESTMapping
}

// newMapper is the manager's MapperProvider: controller-runtime's dynamic mapper under a
// mappingCache.
func newMapper(cfg *rest.Config, httpClient *http.Client) (meta.RESTMapper, error) {
	m, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("create REST mapper: %w", err)
	}
	return newMappingCache(m), nil
}

func newMappingCache(m meta.RESTMapper) *mappingCache {
	return &mappingCache{RESTMapper: m, found: map[schema.GroupVersionKind]*meta.RESTMapping{}}
}

func (c *mappingCache) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	if len(versions) != 1 {
		return c.RESTMapper.RESTMapping(gk, versions...)
	}
	key := gk.WithVersion(versions[0])
	c.mu.RLock()
	m, ok := c.found[key]
	c.mu.RUnlock()
	if ok {
		return m, nil
	}
	m, err := c.RESTMapper.RESTMapping(gk, versions...)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.found[key] = m
	c.mu.Unlock()
	return m, nil
}
