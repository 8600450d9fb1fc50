package crdt

// Key names one counter: an event type (view, like, share, ...) on one video.
type Key struct {
	Video string
	Event string
}

// String formats k as "video/event" for logs.
func (k Key) String() string { return k.Video + "/" + k.Event }
