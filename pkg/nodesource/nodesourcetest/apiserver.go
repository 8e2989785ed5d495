package nodesourcetest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
)

// APIServer is a stand-in for kube-apiserver where a test or benchmark runs
// ferryd as a process of its own, which the fake clientset cannot reach. It
// serves the part of the API that client-go's Node informer uses: GET
// /api/v1/nodes as a list, as a watch from a resource version, and as a watch
// with the initial events first (the watch-list protocol of client-go 1.35 and
// later). It keeps every change, so a watch from an earlier version replays
// what followed it.
type APIServer struct {
	mu       sync.Mutex
	version  uint64
	nodes    map[string]*corev1.Node
	history  []watchEvent
	watchers map[chan watchEvent]bool
	server   *http.Server
	requests map[string]int
	auth     map[string]int // requests by Authorization header
}

type watchEvent struct {
	Type    watch.EventType `json:"type"`
	Object  any             `json:"object"`
	version uint64
}

// NewAPIServer returns a server that holds nodes.
func NewAPIServer(nodes ...*corev1.Node) *APIServer {
	s := &APIServer{nodes: map[string]*corev1.Node{}, watchers: map[chan watchEvent]bool{},
		requests: map[string]int{}, auth: map[string]int{}}
	for _, n := range nodes {
		s.Put(n)
	}
	s.server = &http.Server{Handler: http.HandlerFunc(s.serveNodes),
		ReadHeaderTimeout: 10 * time.Second}
	return s
}

// Serve serves the API on l until Close. A test creates l in the network
// namespace that ferryd runs in.
func (s *APIServer) Serve(l net.Listener) {
	go func() { _ = s.server.Serve(l) }()
}

// Close stops the server and ends the watches.
func (s *APIServer) Close() error {
	return s.server.Close()
}

// Put adds node, or replaces the node of its name, and sends the change to
// the open watches.
func (s *APIServer) Put(node *corev1.Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	node = node.DeepCopy()
	node.TypeMeta = metav1.TypeMeta{Kind: "Node", APIVersion: "v1"}
	typ := watch.Added
	if old, ok := s.nodes[node.Name]; ok {
		typ = watch.Modified
		node.UID = old.UID
		node.CreationTimestamp = old.CreationTimestamp
	} else {
		node.UID = types.UID("uid-" + node.Name)
		node.CreationTimestamp = metav1.Now()
	}
	s.version++
	node.ResourceVersion = strconv.FormatUint(s.version, 10)
	s.nodes[node.Name] = node
	s.publish(watchEvent{Type: typ, Object: node, version: s.version})
}

// Delete removes the node called name and sends the deletion to the open
// watches.
func (s *APIServer) Delete(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	node, ok := s.nodes[name]
	if !ok {
		return
	}
	delete(s.nodes, name)
	s.version++
	node = node.DeepCopy()
	node.ResourceVersion = strconv.FormatUint(s.version, 10)
	s.publish(watchEvent{Type: watch.Deleted, Object: node, version: s.version})
}

// Requests returns the number of list and watch requests served, under the
// keys "list" and "watch".
func (s *APIServer) Requests() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, v := range s.requests {
		out[k] = v
	}
	return out
}

// RequestsWith returns how many requests carried the Authorization header value, such as
// "Bearer TOKEN".
func (s *APIServer) RequestsWith(authorization string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.auth[authorization]
}

// publish records e and sends it to every watch. A watch that falls behind by
// a full buffer is ended, and its client watches again from its last version.
func (s *APIServer) publish(e watchEvent) {
	s.history = append(s.history, e)
	for ch := range s.watchers {
		select {
		case ch <- e:
		default:
			delete(s.watchers, ch)
			close(ch)
		}
	}
}

func (s *APIServer) serveNodes(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.auth[r.Header.Get("Authorization")]++
	s.mu.Unlock()
	if r.Method != http.MethodGet || r.URL.Path != "/api/v1/nodes" {
		writeStatus(w, http.StatusNotFound, "NotFound",
			fmt.Sprintf("%s %s is not served here: only GET /api/v1/nodes", r.Method, r.URL.Path))
		return
	}
	q := r.URL.Query()
	if q.Get("watch") == "true" || q.Get("watch") == "1" {
		s.serveWatch(w, r)
		return
	}
	s.mu.Lock()
	s.requests["list"]++
	list := corev1.NodeList{
		TypeMeta: metav1.TypeMeta{Kind: "NodeList", APIVersion: "v1"},
		ListMeta: metav1.ListMeta{ResourceVersion: strconv.FormatUint(s.version, 10)},
	}
	for _, name := range sortedKeys(s.nodes) {
		list.Items = append(list.Items, *s.nodes[name])
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&list)
}

func (s *APIServer) serveWatch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeStatus(w, http.StatusInternalServerError, "InternalError", "no streaming")
		return
	}
	var from uint64
	if v := q.Get("resourceVersion"); v != "" {
		var err error
		if from, err = strconv.ParseUint(v, 10, 64); err != nil {
			writeStatus(w, http.StatusBadRequest, "BadRequest",
				fmt.Sprintf("invalid resourceVersion %q", v))
			return
		}
	}
	timeout := 30 * time.Minute
	if v, err := strconv.Atoi(q.Get("timeoutSeconds")); err == nil && v > 0 {
		timeout = time.Duration(v) * time.Second
	}

	// The events to send first, and the channel of later ones, are taken
	// under one lock, so that no change falls between them.
	ch := make(chan watchEvent, 4096)
	var first []watchEvent
	s.mu.Lock()
	s.requests["watch"]++
	if q.Get("sendInitialEvents") == "true" {
		for _, name := range sortedKeys(s.nodes) {
			first = append(first, watchEvent{Type: watch.Added, Object: s.nodes[name]})
		}
		first = append(first, watchEvent{Type: watch.Bookmark, Object: &corev1.Node{
			TypeMeta: metav1.TypeMeta{Kind: "Node", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{
				ResourceVersion: strconv.FormatUint(s.version, 10),
				Annotations:     map[string]string{metav1.InitialEventsAnnotationKey: "true"},
			},
		}})
	} else {
		for _, e := range s.history {
			if e.version > from {
				first = append(first, e)
			}
		}
	}
	s.watchers[ch] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.watchers[ch] {
			delete(s.watchers, ch)
		}
		s.mu.Unlock()
	}()

	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	for _, e := range first {
		if enc.Encode(&e) != nil {
			return
		}
	}
	flusher.Flush()
	end := time.NewTimer(timeout)
	defer end.Stop()
	for {
		select {
		case e, open := <-ch:
			if !open {
				return
			}
			if enc.Encode(&e) != nil {
				return
			}
			flusher.Flush()
		case <-end.C:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// writeStatus writes a Kubernetes Status object, which client-go turns into
// an API error.
func writeStatus(w http.ResponseWriter, code int, reason, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(&metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Code: int32(code),
		Reason: metav1.StatusReason(reason), Message: message,
	})
}

func sortedKeys(m map[string]*corev1.Node) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// WriteKubeconfig writes a kubeconfig file at path that points at
// http://addr, without credentials.
func WriteKubeconfig(path, addr string) error {
	if strings.ContainsAny(addr, "/ ") {
		return fmt.Errorf("invalid API server address %q: want host:port", addr)
	}
	config := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: http://%s
contexts:
- name: lab
  context:
    cluster: lab
    user: ferryd
users:
- name: ferryd
  user: {}
current-context: lab
`, addr)
	return os.WriteFile(path, []byte(config), 0o600)
}
