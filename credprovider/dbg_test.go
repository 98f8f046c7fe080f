package credprovider_test
import ("testing";"time";"fmt";"github.com/tetherd/tether/credprovider/iotcredtest")
func TestDbg(t *testing.T) {
	for i := 0; i < 30; i++ {
	s, dev := sim(t)
	o := iotOpts(s, dev)
	o.Timeout = 200 * time.Millisecond
	p := newIoT(t, o)
	s.Fail(1, iotcredtest.FaultSlow)
	t0 := time.Now()
	_, err := p.Retrieve(t.Context())
	if _, ok := err.(interface{Retryable() bool}); !ok || s.Requests() != 1 {
	fmt.Printf("%v %#v\n%v %v\n", time.Since(t0), err, s.Requests(), err)
	}
	}
}
