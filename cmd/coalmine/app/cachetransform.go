package app

import (
	"slices"
	"strconv"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// What the cache keeps of an object. Nothing coalmine does reads managedFields, often the
// largest part of a cached Deployment, Service or Canary: they are dropped. And the small
// string maps of an object (labels, annotations, selectors, a Canary's Service metadata)
// that equal one the cache already holds are replaced by that one. They repeat: the
// seed's `8080.service.kuma.io/protocol: http` is on a Canary's three Service metadata and
// on the three Services made from them, a Deployment's selector equals its pod labels,
// and each map, decoded on its own, is a 288-byte allocation even with one entry. Sharing
// them, with the smaller Service index (rollout.IndexServiceController), took make
// bench's live heap per canary at N=200 from ~21 to ~17 KiB.
//
// Sharing is safe because cached objects are never modified: a client.Get or List copies
// what it returns (DeepCopy makes new maps), and the loop's uncopied reads
// (client.UnsafeDisableDeepCopy) and event handlers only read.

// Maps larger than these are kept as decoded: they rarely repeat (a
// last-applied-configuration annotation), and keying them would cost more than they save.
const (
	sharedMapMaxEntries = 8
	sharedMapMaxBytes   = 512
	// sharedMapsMax bounds the pool. Maps of objects since changed or deleted stay in it
	// until it is full; it then starts afresh (objects keep the maps they hold).
	sharedMapsMax = 4096
)

// newCacheTransform returns the cache's DefaultTransform: managedFields stripped, small
// maps shared.
func newCacheTransform() toolscache.TransformFunc {
	p := &mapPool{maps: map[string]map[string]string{}}
	return func(obj any) (any, error) {
		if o, err := meta.Accessor(obj); err == nil {
			o.SetManagedFields(nil)
			o.SetLabels(p.share(o.GetLabels()))
			o.SetAnnotations(p.share(o.GetAnnotations()))
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			if o.Spec.Selector != nil {
				o.Spec.Selector.MatchLabels = p.share(o.Spec.Selector.MatchLabels)
			}
			o.Spec.Template.Labels = p.share(o.Spec.Template.Labels)
			o.Spec.Template.Annotations = p.share(o.Spec.Template.Annotations)
		case *corev1.Service:
			o.Spec.Selector = p.share(o.Spec.Selector)
		case *v1beta1.Canary:
			for _, m := range []*v1beta1.CustomMetadata{o.Spec.Service.Apex, o.Spec.Service.Primary, o.Spec.Service.Canary} {
				if m != nil {
					m.Labels = p.share(m.Labels)
					m.Annotations = p.share(m.Annotations)
				}
			}
		}
		return obj, nil
	}
}

// mapPool holds one map of each content shared so far. Informers transform concurrently.
type mapPool struct {
	mu   sync.Mutex
	maps map[string]map[string]string
}

// share returns the pooled map equal to m, pooling m when there is none. nil, empty and
// large maps come back as they are.
func (p *mapPool) share(m map[string]string) map[string]string {
	key, ok := contentKey(m)
	if !ok {
		return m
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, found := p.maps[key]; found {
		return s
	}
	if len(p.maps) >= sharedMapsMax {
		clear(p.maps)
	}
	p.maps[key] = m
	return m
}

// contentKey encodes m's entries in key order, each string length-prefixed so no two
// contents share a key; false when m is not one to share.
func contentKey(m map[string]string) (string, bool) {
	if len(m) == 0 || len(m) > sharedMapMaxEntries {
		return "", false
	}
	size := 0
	for k, v := range m {
		size += len(k) + len(v)
	}
	if size > sharedMapMaxBytes {
		return "", false
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.Grow(size + 8*len(m))
	for _, k := range keys {
		for _, s := range []string{k, m[k]} {
			b.WriteString(strconv.Itoa(len(s)))
			b.WriteByte(':')
			b.WriteString(s)
		}
	}
	return b.String(), true
}
