// Two AudioWorklet processors: "capture" hands the microphone's samples to the page, "playback" plays the
// bot's audio from a queue and reports each mark once the audio queued before it has been played, so the
// server knows what the caller actually heard (the same contract as Twilio Media Streams' marks).

class CaptureProcessor extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) this.port.postMessage(channel.slice(0));
    return true;
  }
}

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = []; // {samples: Float32Array, marks: string[]}
    this.offset = 0;
    this.port.onmessage = (event) => this.receive(event.data);
  }

  receive(message) {
    if (message.type === "audio") {
      this.queue.push({ samples: message.samples, marks: [] });
    } else if (message.type === "mark") {
      if (this.queue.length) this.queue[this.queue.length - 1].marks.push(message.name);
      else this.port.postMessage({ played: [message.name] });
    } else if (message.type === "clear") {
      const dropped = this.queue.flatMap((item) => item.marks);
      this.queue = [];
      this.offset = 0;
      if (dropped.length) this.port.postMessage({ played: dropped });
    }
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    let written = 0;
    while (written < out.length && this.queue.length) {
      const head = this.queue[0];
      const count = Math.min(out.length - written, head.samples.length - this.offset);
      out.set(head.samples.subarray(this.offset, this.offset + count), written);
      written += count;
      this.offset += count;
      if (this.offset >= head.samples.length) {
        this.queue.shift();
        this.offset = 0;
        if (head.marks.length) this.port.postMessage({ played: head.marks });
      }
    }
    out.fill(0, written);
    return true;
  }
}

registerProcessor("capture", CaptureProcessor);
registerProcessor("playback", PlaybackProcessor);
