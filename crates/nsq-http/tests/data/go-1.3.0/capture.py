import socket, struct, json, time, subprocess, urllib.request, os, shutil
G=os.environ.get("G", "/work/shared/reference/go-nsq-1.3.0-linux-amd64")
# Captures the Go 1.3.0 replies in this directory: python3 capture.py (Go binaries from
# ../shared/reference/go-nsq-1.3.0-linux-amd64, or G=...; loopback ports 26150-26161).
D="/tmp/apitypes-go/data"; shutil.rmtree(D, ignore_errors=True); os.makedirs(D)
L=subprocess.Popen([G+"/nsqlookupd","--tcp-address=127.0.0.1:26160","--http-address=127.0.0.1:26161","--broadcast-address=127.0.0.1"],stdout=open(D+"/l.log","w"),stderr=subprocess.STDOUT)
N=subprocess.Popen([G+"/nsqd","--tcp-address=127.0.0.1:26150","--http-address=127.0.0.1:26151","--data-path="+D,"--broadcast-address=127.0.0.1","--lookupd-tcp-address=127.0.0.1:26160","--e2e-processing-latency-percentile=0.99,0.5"],stdout=open(D+"/n.log","w"),stderr=subprocess.STDOUT)
def get(p, port=26151):
    for i in range(50):
        try: return urllib.request.urlopen("http://127.0.0.1:%d%s"%(port,p)).read()
        except Exception as e:
            err=e; time.sleep(0.1)
    raise err
def post(p, body=b"", port=26151):
    return urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:%d%s"%(port,p),data=body,method="POST")).read()
get("/ping"); get("/ping",26161)
def conn(cid):
    s=socket.create_connection(("127.0.0.1",26150)); s.sendall(b"  V2")
    body=json.dumps({"client_id":cid,"hostname":cid+"-host","user_agent":"fixture/1.0","feature_negotiation":True}).encode()
    s.sendall(b"IDENTIFY\n"+struct.pack(">I",len(body))+body); read(s); return s
def read(s):
    h=b""
    while len(h)<8: h+=s.recv(8-len(h))
    size,ft=struct.unpack(">Ii",h); d=b""
    while len(d)<size-4: d+=s.recv(size-4-len(d))
    return ft,d
p=conn("producer")
for i in range(5):
    m=b"msg%d"%i; p.sendall(b"PUB fixture_topic\n"+struct.pack(">I",len(m))+m); read(p)
post("/channel/create?topic=fixture_topic&channel=other_channel")
post("/topic/create?topic=empty_topic")
c=conn("consumer")
c.sendall(b"SUB fixture_topic fixture_channel\n"); read(c)
for i in range(3):
    m=b"more%d"%i; p.sendall(b"PUB fixture_topic\n"+struct.pack(">I",len(m))+m); read(p)
c.sendall(b"RDY 2\n")
ids=[]
while len(ids)<2:
    ft,d=read(c)
    if ft==2: ids.append(d[10:26])
c.sendall(b"FIN "+ids[0]+b"\n")
time.sleep(0.5)
post("/channel/pause?topic=fixture_topic&channel=other_channel")
time.sleep(1.5)
out=os.path.dirname(os.path.abspath(__file__)); os.makedirs(out,exist_ok=True)
for name,path,port in [("nsqd-stats.json","/stats?format=json",26151),("nsqd-stats-noclients.json","/stats?format=json&include_clients=false&include_mem=false",26151),("nsqd-info.json","/info",26151),
    ("lookupd-lookup.json","/lookup?topic=fixture_topic",26161),("lookupd-nodes.json","/nodes",26161),("lookupd-topics.json","/topics",26161),("lookupd-channels.json","/channels?topic=fixture_topic",26161),("lookupd-info.json","/info",26161)]:
    open(out+"/"+name,"wb").write(get(path,port))
N.terminate(); L.terminate(); N.wait(); L.wait()
