package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/weftmesh/weft/api/client"
)

// cli runs the commands that talk to a running peer.
func cli(g global, args []string) error {
	if len(args) == 0 {
		return usageError{"no command"}
	}
	c := client.New(g.socket)
	cx, cancel := ctx()
	defer cancel()
	switch args[0] {
	case "status":
		return status(c, g, args[1:])
	case "connect", "forget":
		if len(args) < 2 {
			return usageError{"weft " + args[0] + " needs at least one PEER"}
		}
		var out client.PeersRequest
		if err := c.Do(cx, http.MethodPost, "/"+args[0], client.PeersRequest{Peers: args[1:]}, &out); err != nil {
			return err
		}
		return printOut(g, out, fmt.Sprintf("%sed: %s", strings.TrimSuffix(args[0], "e"), strings.Join(args[1:], " ")))
	case "rmpeer":
		if len(args) != 2 {
			return usageError{"weft rmpeer needs exactly one NAME"}
		}
		var out client.RmpeerResult
		if err := c.Do(cx, http.MethodPost, "/rmpeer", client.RmpeerRequest{Name: args[1]}, &out); err != nil {
			return err
		}
		return printOut(g, out, fmt.Sprintf("took over %d addresses from %s", out.Reclaimed, out.Name))
	case "ip":
		return ipCmd(c, g, args[1:])
	case "dns":
		return dnsCmd(c, g, args[1:])
	case "policy":
		return policyCmd(c, g, args[1:])
	}
	return usageError{fmt.Sprintf("unknown command %q", args[0])}
}

func printOut(g global, v any, text string) error {
	if g.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	fmt.Println(text)
	return nil
}

func ipCmd(c *client.Client, g global, args []string) error {
	if len(args) != 2 {
		return usageError{"weft ip allocate|release|lookup ID"}
	}
	cx, cancel := ctx()
	defer cancel()
	id := args[1]
	switch args[0] {
	case "allocate":
		a, err := c.Allocate(cx, client.AllocateRequest{ID: id})
		if err != nil {
			return err
		}
		return printOut(g, map[string]string{"id": a.ID, "address": a.Address}, a.Address)
	case "lookup":
		a, err := c.Lookup(cx, id)
		if err != nil {
			if errors.Is(err, client.ErrNotFound) {
				return fmt.Errorf("no address allocated to %q on this peer", id)
			}
			return err
		}
		return printOut(g, map[string]string{"id": a.ID, "address": a.Address}, a.Address)
	case "release":
		if err := c.Release(cx, id); err != nil {
			return err
		}
		return printOut(g, map[string]string{"id": id}, "released "+id)
	}
	return usageError{fmt.Sprintf("unknown ip command %q", args[0])}
}

func dnsCmd(c *client.Client, g global, args []string) error {
	if len(args) < 2 {
		return usageError{"weft dns add NAME IP | remove NAME [IP] | lookup NAME"}
	}
	cx, cancel := ctx()
	defer cancel()
	switch args[0] {
	case "add":
		if len(args) != 3 {
			return usageError{"weft dns add NAME IP"}
		}
		if err := c.DNSAdd(cx, client.DNSRequest{Name: args[1], Address: args[2]}); err != nil {
			return err
		}
		return printOut(g, client.DNSRequest{Name: args[1], Address: args[2]}, "added "+args[1]+" "+args[2])
	case "remove":
		req := client.DNSRequest{Name: args[1]}
		if len(args) == 3 {
			req.Address = args[2]
		}
		if err := c.DNSRemove(cx, req); err != nil {
			return err
		}
		return printOut(g, req, "removed "+strings.Join(args[1:], " "))
	case "lookup":
		r, err := c.DNSLookup(cx, args[1])
		if err != nil {
			if errors.Is(err, client.ErrNotFound) {
				return fmt.Errorf("%s: no such name", args[1])
			}
			return err
		}
		return printOut(g, r, strings.Join(r.Addresses, "\n"))
	}
	return usageError{fmt.Sprintf("unknown dns command %q", args[0])}
}
